"""``python -m ferryman_runtimes.ray SPEC --port 8080``: the spec on a local Ray instance (what
``start_local`` runs)."""

from __future__ import annotations

import argparse
import sys

from ferryman.errors import FerrymanError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ferryman_runtimes.ray", description=__doc__)
    p.add_argument("spec", help="ModelDeployment YAML")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080, help="HTTP port of the ingress (direct ingress)")
    p.add_argument(
        "--proxy-port", type=int, default=None, help="port of Ray Serve's own HTTP proxy (default: free)"
    )
    p.add_argument(
        "--cpus", type=float, default=None, help="CPUs for the local Ray instance (default: up to 2)"
    )
    p.add_argument(
        "--inline-below-ms",
        type=float,
        default=None,
        help="versions whose one-row run is faster than this run inside the ingress (0: never)",
    )
    p.add_argument(
        "--dispatch",
        action="append",
        default=[],
        metavar="VERSION=MODE",
        help="force a version 'inline' (in the ingress) or 'remote' (its own deployment); repeatable",
    )
    p.add_argument(
        "--state-dir",
        default=None,
        help="drive the rollout (state kept here) and serve the admin API; default: first step only",
    )
    p.add_argument("--admin-host", default=None, help="admin API address (default: --host)")
    p.add_argument(
        "--admin-port",
        type=int,
        default=None,
        help="admin API port (default: the first port after the direct-ingress range)",
    )
    args = p.parse_args(argv)
    dispatch = {}
    for item in args.dispatch:
        version, sep, mode = item.partition("=")
        if not sep:
            p.error(f"--dispatch {item!r}: expected VERSION=MODE")
        dispatch[version] = mode
    from ferryman_runtimes.ray.launcher import run

    try:
        run(
            args.spec,
            host=args.host,
            port=args.port,
            proxy_port=args.proxy_port,
            cpus=args.cpus,
            inline_below_ms=args.inline_below_ms,
            dispatch=dispatch,
            state_dir=args.state_dir,
            admin_host=args.admin_host,
            admin_port=args.admin_port,
        )
    except (FerrymanError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
