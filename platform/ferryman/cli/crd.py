"""`ferryman crd`: print or write the ModelDeployment CRD generated from the pydantic spec."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ferryman.cli import main as cli


def _crd(args: argparse.Namespace) -> int:
    from ferryman.crd import crd_yaml

    text = crd_yaml()
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        cli.console.print(f"wrote {args.output}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("crd", help="the ModelDeployment CRD generated from the spec")
    p.add_argument("-o", "--output", type=Path, default=None)
    p.set_defaults(func=_crd)


cli.EXTENSIONS.append(register)
