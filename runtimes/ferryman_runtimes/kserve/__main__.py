"""``python -m ferryman_runtimes.kserve --model_name NAME --model_dir /mnt/models --http_port 8080``.

The command the ``ferryman-onnx`` ClusterServingRuntime (and the runtime image) runs: KServe's argument
names, model directory as the storage initializer lays it out, v1 + v2 on one HTTP port.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ferryman.errors import FerrymanError
from ferryman_runtimes.kserve.server import DEFAULT_HTTP_PORT, DEFAULT_MODEL_DIR, Options


def parse(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(
        prog="python -m ferryman_runtimes.kserve",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model_name", "--model-name", required=True, help="name the model is served under")
    p.add_argument(
        "--model_dir",
        "--model-dir",
        default=DEFAULT_MODEL_DIR,
        help=f"directory holding the .onnx file, or the file itself (default {DEFAULT_MODEL_DIR})",
    )
    p.add_argument("--model_version", "--model-version", default="1", help="version reported in responses")
    p.add_argument("--http_port", "--http-port", type=int, default=DEFAULT_HTTP_PORT)
    p.add_argument(
        "--grpc_port",
        "--grpc-port",
        type=int,
        default=None,
        help="also serve the v2 protocol over gRPC on this port (KServe's convention: 8081); "
        "default: REST only",
    )
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--workers", type=int, default=1, help="server processes (each loads its own session)")
    p.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("FERRYMAN_THREADS") or 1),
        help="ONNX Runtime intra-op threads per session (default: $FERRYMAN_THREADS or 1)",
    )
    p.add_argument("--max_body_bytes", "--max-body-bytes", type=int, default=None)
    p.add_argument(
        "--batching",
        default=os.environ.get("FERRYMAN_BATCHING") or None,
        help='adaptive batching, as spec.batching JSON, e.g. \'{"maxBatchSize": 32, "maxDelayMs": 2}\' '
        "(default: $FERRYMAN_BATCHING; none: no batching)",
    )
    a = p.parse_args(argv)
    if a.workers < 1 or a.threads < 1:
        p.error("--workers and --threads must be at least 1")
    return Options(
        model_name=a.model_name,
        model_dir=a.model_dir,
        model_version=a.model_version,
        http_port=a.http_port,
        host=a.host,
        workers=a.workers,
        threads=a.threads,
        max_body_bytes=a.max_body_bytes,
        batching=a.batching,
        grpc_port=a.grpc_port,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ferryman_runtimes.kserve.server import run

    try:
        run(options)
    except FerrymanError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
