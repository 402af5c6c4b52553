"""Ray Serve with ``@serve.batch``: Ray's documented way to batch a model (one replica, Ray's HTTP proxy).

The replica's ``__call__`` decodes the request and awaits a ``@serve.batch`` method, which stacks the queued
rows into one ONNX Runtime run and splits the outputs back (Ray Serve's guide: "dynamic request batching").
``--max-batch-size`` / ``--batch-wait-timeout-s`` are its two knobs (defaults: 32 and 2 ms, as ferryman's
compute-bound examples use). ``GET /stats`` reports the batches run and the requests they answered, for
the mean batch size. A local Ray instance of its own (``num_cpus=2``, no dashboard); SIGTERM shuts it down.
``python -m loadtests.contenders.ray_batch --model-path M --port P``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

import numpy as np
import orjson
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from loadtests.contenders.ort_session import make_session, server_args

MAX_BATCH_SIZE = 32
BATCH_WAIT_TIMEOUT_S = 0.002


@serve.deployment(num_replicas=1, max_ongoing_requests=256)
class BatchedOrt:
    def __init__(self, model_path: str, model_name: str, max_batch_size: int, wait_s: float) -> None:
        self.session = make_session(model_path)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.model_name = model_name
        self.batches = 0
        self.requests = 0
        self.run_batch.set_max_batch_size(max_batch_size)  # type: ignore[attr-defined]
        self.run_batch.set_batch_wait_timeout_s(wait_s)  # type: ignore[attr-defined]

    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_TIMEOUT_S)
    async def run_batch(self, inputs: list[np.ndarray]) -> list[list[np.ndarray]]:
        counts = [len(x) for x in inputs]
        results = self.session.run(self.output_names, {self.input_name: np.concatenate(inputs)})
        self.batches += 1
        self.requests += len(inputs)
        bounds = np.cumsum(counts)[:-1]
        pieces = [np.split(r, bounds) for r in results]
        return [[p[i] for p in pieces] for i in range(len(inputs))]

    async def __call__(self, request: Request) -> Response:
        if request.method != "POST":
            if request.url.path.endswith("/stats"):
                return Response(
                    orjson.dumps({"batches": self.batches, "requests": self.requests}),
                    media_type="application/json",
                )
            return Response(b'{"ready":true}', media_type="application/json")
        try:
            tensor = orjson.loads(await request.body())["inputs"][0]
            x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        except Exception as err:
            return Response(
                orjson.dumps({"error": str(err)[:200]}), status_code=400, media_type="application/json"
            )
        results = await self.run_batch(x)
        outputs = [
            {
                "name": n,
                "datatype": "INT64" if r.dtype == np.int64 else "FP32",
                "shape": list(r.shape),
                "data": r.ravel(),
            }
            for n, r in zip(self.output_names, results, strict=True)
        ]
        return Response(
            orjson.dumps(
                {"model_name": self.model_name, "outputs": outputs}, option=orjson.OPT_SERIALIZE_NUMPY
            ),
            media_type="application/json",
        )


def batch_args() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--max-batch-size", type=int, default=MAX_BATCH_SIZE)
    p.add_argument("--batch-wait-timeout-s", type=float, default=BATCH_WAIT_TIMEOUT_S)
    args, _ = p.parse_known_args(sys.argv[1:])
    return args


def main() -> None:
    import ray

    args = server_args(__doc__ or "")
    batching = batch_args()
    stop = threading.Event()

    def _stop(*_: Any) -> None:
        stop.set()

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    signal.signal(signal.SIGTERM, _stop)  # after ray.init, whose logging installs its own handler
    signal.signal(signal.SIGINT, _stop)
    try:
        serve.start(http_options={"host": args.host, "port": args.port})
        app = BatchedOrt.bind(  # type: ignore[attr-defined]  # @serve.deployment adds bind
            args.model_path,
            args.model_name,
            batching.max_batch_size,  # type: ignore[attr-defined]
            batching.batch_wait_timeout_s,
        )
        serve.run(app, name="bench", route_prefix="/")
        print("ray serve (batched) ready", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


if __name__ == "__main__":
    main()
