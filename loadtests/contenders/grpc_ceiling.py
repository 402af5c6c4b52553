"""The grpcio ceiling: a ``grpc.aio`` server on uvloop (as ferryman's) answering every ``ModelInfer`` with one
fixed, valid ``ModelInferResponse``: no parsing, no model, no metrics. What the gRPC library alone allows
on this machine, the gRPC section's limit row (as raw ONNX Runtime is the HTTP section's).
``python -m loadtests.contenders.grpc_ceiling --model-path M --port P --grpc-port G`` (``GET`` on ``P``
answers 200 once the gRPC server is up: the harness's readiness probe).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import grpc
import uvloop

from ferryman_runtimes.grpc import inference_pb2 as pb
from loadtests.contenders.ort_session import server_args

_READY = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\n"
    b'connection: close\r\n\r\n{"ready": true}'
)


def answer(model: str) -> bytes:
    response = pb.ModelInferResponse(model_name=model, model_version="v1", raw_output_contents=[b"\0" * 8])
    response.outputs.add(name="label", datatype="INT64", shape=[1, 1])
    return response.SerializeToString()  # type: ignore[no-any-return]


async def serve(*, host: str, port: int, grpc_port: int, model: str) -> None:
    fixed = answer(model)

    async def infer(body: bytes, context: Any) -> bytes:
        return fixed

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "inference.GRPCInferenceService", {"ModelInfer": grpc.unary_unary_rpc_method_handler(infer)}
            ),
        )
    )
    server.add_insecure_port(f"{host}:{grpc_port}")
    await server.start()

    async def ready(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(_READY)
        await writer.drain()
        writer.close()

    probe = await asyncio.start_server(ready, host, port)
    async with probe:
        await server.wait_for_termination()


def main() -> None:
    args = server_args(__doc__ or "")
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--grpc-port", type=int, required=True)
    grpc_port = extra.parse_known_args()[0].grpc_port
    uvloop.run(serve(host=args.host, port=args.port, grpc_port=grpc_port, model=args.model_name))


if __name__ == "__main__":
    main()
