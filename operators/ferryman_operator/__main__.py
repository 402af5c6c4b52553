"""``python -m ferryman_operator [--kubeconfig FILE] [-n NAMESPACE ...]``: run the operator.

Settings come from ``FERRYMAN_*`` environment variables (``--help`` lists them); see docs/operator.md.
SIGTERM or SIGINT stops it cleanly (the leader gives its Lease up, so a standby takes over at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

from ferryman_operator.handlers import Operator
from ferryman_operator.kube.config import ConfigError, connection_info, use_kubeconfig
from ferryman_operator.settings import build_parser, from_env


async def _run(operator: Operator) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await operator.run(stop)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = from_env(kubeconfig=args.kubeconfig, namespaces=args.namespaces)
    logging.basicConfig(
        level=getattr(logging, settings.log_level, logging.INFO),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "httpcore", "kopf"):  # per-request chatter
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        use_kubeconfig(settings.kubeconfig)
        connection_info()  # fail now, with the reason, rather than inside the first request
    except ConfigError as err:
        print(f"ferryman-operator: {err}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(Operator(settings)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
