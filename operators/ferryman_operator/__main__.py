"""``python -m ferryman_operator [--kubeconfig FILE] [-n NAMESPACE ...]``: run the operator (kopf).

Settings come from ``FERRYMAN_*`` environment variables (``--help`` lists them); see docs/operator.md.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import kopf

from ferryman_operator.handlers import Operator, register
from ferryman_operator.kube.config import ConfigError, use_kubeconfig
from ferryman_operator.settings import build_parser, from_env


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = from_env(kubeconfig=args.kubeconfig, namespaces=args.namespaces)
    logging.basicConfig(level=getattr(logging, settings.log_level, logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "kopf.objects", "kopf.activities", "aiohttp.access"):  # per-request/handler chatter
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        use_kubeconfig(settings.kubeconfig)
    except ConfigError as err:
        print(f"ferryman-operator: {err}", file=sys.stderr)
        return 2
    registry = kopf.OperatorRegistry()
    register(registry, Operator(settings))
    liveness = f"http://{settings.health_address}/healthz" if settings.health_address else None
    kopf.run(registry=registry, standalone=True, clusterwide=settings.clusterwide,
             namespaces=list(settings.namespaces), liveness_endpoint=liveness)
    return 0


if __name__ == "__main__":
    sys.exit(main())
