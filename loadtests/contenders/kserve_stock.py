"""Stock KServe ModelServer with a custom ``kserve.Model`` running ONNX Runtime (Open Inference Protocol v2).

The server is KServe's own (FastAPI app, its data plane, its logging defaults); the shutdown grace period is
shortened, and gRPC is off unless ``--grpc-port`` is given: then KServe's own gRPC server
(``inference.GRPCInferenceService`` on grpc.aio, in the same process) serves the same model.
``python -m loadtests.contenders.kserve_stock --model-path M --port P [--grpc-port G]``.
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any

import kserve
import numpy as np
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from loadtests.contenders.ort_session import make_session, server_args

_DATATYPE = {np.dtype(np.int64): "INT64", np.dtype(np.float32): "FP32"}


class OrtModel(kserve.Model):
    def __init__(self, name: str, model_path: str) -> None:
        super().__init__(name)
        self.model_path = model_path
        self.load()

    def load(self) -> bool:
        self.session = make_session(self.model_path)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.ready = True
        return self.ready

    async def predict(
        self,
        payload: Any,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> InferResponse:
        assert isinstance(payload, InferRequest)
        x = payload.inputs[0].as_numpy().astype(np.float32, copy=False)
        results = self.session.run(self.output_names, {self.input_name: x})
        outputs = [
            InferOutput(name=n, shape=list(r.shape), datatype=_DATATYPE[r.dtype], data=r.ravel().tolist())
            for n, r in zip(self.output_names, results, strict=True)
        ]
        return InferResponse(
            response_id=payload.id or str(uuid.uuid4()), model_name=self.name, infer_outputs=outputs
        )


def main() -> None:
    args = server_args(__doc__ or "")
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--grpc-port", type=int, default=None)
    grpc_port = extra.parse_known_args()[0].grpc_port
    model = OrtModel(args.model_name, args.model_path)
    grpc = {"enable_grpc": True, "grpc_port": grpc_port} if grpc_port else {"enable_grpc": False}
    kserve.ModelServer(http_port=args.port, workers=1, grace_period=2, **grpc).start([model])


if __name__ == "__main__":
    main()
