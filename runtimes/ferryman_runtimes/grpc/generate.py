"""Regenerate ``inference_pb2.py`` and ``inference_pb2.pyi`` from ``inference.proto``.

    .venv/bin/python -m ferryman_runtimes.grpc.generate

protoc (grpcio-tools) writes the modules; one deterministic edit follows: the file is added to a private
descriptor pool instead of protobuf's default one. The standard clients (``tritonclient.grpc``, the KServe
SDK) register the same ``inference.*`` message names in the default pool, and a second registration there
is an error, so a process that serves ferryman's gRPC and also imports a client (a test, a gateway that
calls KServe) would fail to start. The wire format does not depend on the pool.
``tests/unit/test_grpc_generated.py`` checks that the committed files equal a fresh generation.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
ROOT = (
    PACKAGE_DIR.parent.parent
)  # runtimes/: the import root, so the module imports as ferryman_runtimes.grpc
PROTO = "ferryman_runtimes/grpc/inference.proto"
OUTPUTS = ("inference_pb2.py", "inference_pb2.pyi")
HEADER = "# Generated from inference.proto by `python -m ferryman_runtimes.grpc.generate`: do not edit.\n"
_DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
_PRIVATE_POOL = (
    "# a private pool: the standard clients register the same inference.* names in the default one\n"
    "_POOL = _descriptor_pool.DescriptorPool()\n"
    "DESCRIPTOR = _POOL.AddSerializedFile("
)


def generate() -> dict[str, str]:
    """The generated files' contents by name (nothing is written)."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory(prefix="ferryman-protoc-") as tmp:
        args = ["protoc", f"-I{ROOT}", f"--python_out={tmp}", f"--pyi_out={tmp}", str(ROOT / PROTO)]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {PROTO}")
        out = Path(tmp) / "ferryman_runtimes" / "grpc"
        files = {name: (out / name).read_text() for name in OUTPUTS}
    module = files["inference_pb2.py"]
    if module.count(_DEFAULT_POOL) != 1:
        raise RuntimeError("protoc's output changed: the descriptor pool line was not found once")
    files["inference_pb2.py"] = HEADER + "# ruff: noqa\n" + module.replace(_DEFAULT_POOL, _PRIVATE_POOL)
    files["inference_pb2.pyi"] = HEADER + "# ruff: noqa\n" + files["inference_pb2.pyi"]
    return files


def main() -> int:
    for name, text in generate().items():
        (PACKAGE_DIR / name).write_text(text)
        print(f"wrote {PACKAGE_DIR / name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
