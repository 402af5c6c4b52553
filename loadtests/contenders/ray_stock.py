"""A plain Ray Serve deployment of the model: Ray's HTTP proxy, one replica running ONNX Runtime.

A local Ray instance of its own (``ray.init(address="local", num_cpus=2)``, no dashboard), Serve's proxy on
``--port``, the deployment at route ``/`` with Serve's defaults. Startup takes a while (tens of seconds).
SIGTERM shuts Serve and Ray down. ``python -m loadtests.contenders.ray_stock --model-path M --port P``.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import numpy as np
import orjson
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from loadtests.contenders.ort_session import make_session, server_args


@serve.deployment(num_replicas=1)
class OrtDeployment:
    def __init__(self, model_path: str, model_name: str) -> None:
        self.session = make_session(model_path)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.model_name = model_name

    async def __call__(self, request: Request) -> Response:
        if request.method != "POST":
            return Response(b'{"ready":true}', media_type="application/json")
        try:
            tensor = orjson.loads(await request.body())["inputs"][0]
            x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
            results = self.session.run(self.output_names, {self.input_name: x})
        except Exception as err:
            return Response(
                orjson.dumps({"error": str(err)[:200]}), status_code=400, media_type="application/json"
            )
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


def main() -> None:
    import ray

    args = server_args(__doc__ or "")
    stop = threading.Event()

    def _stop(*_: Any) -> None:
        stop.set()

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    # After ray.init: Ray's own logging installs a SIGTERM handler that would kill the driver uncleanly.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        serve.start(http_options={"host": args.host, "port": args.port})
        app = OrtDeployment.bind(args.model_path, args.model_name)  # type: ignore[attr-defined]
        serve.run(app, name="bench", route_prefix="/")
        print("ray serve ready", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


if __name__ == "__main__":
    main()
