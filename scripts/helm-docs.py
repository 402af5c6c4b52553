#!/usr/bin/env python3
"""Generate the values table of a Helm chart's README.md from the ``# --`` comments of its values.yaml.

The same convention as helm-docs (github.com/norwoodj/helm-docs): a comment starting with ``# --`` right
above a key documents it (continued by the ``#`` lines that follow); ``# @default -- text`` replaces the
rendered default; ``# -- (type) text`` overrides the inferred type. Keys without a ``# --`` comment are not
listed (their parent object is). The table replaces everything between the markers
``<!-- values-table:start -->`` and ``<!-- values-table:end -->`` in README.md.

    python scripts/helm-docs.py                 # charts/ferryman: rewrite README.md's table
    python scripts/helm-docs.py --check         # exit 1 when README.md's table is out of date
    python scripts/helm-docs.py --chart DIR --stdout
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHART = ROOT / "charts" / "ferryman"
START = "<!-- values-table:start -->"
END = "<!-- values-table:end -->"

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.\-/]+|\"[^\"]+\"):(?:\s|$)")
_DOC = re.compile(r"^ *# -- ?(?P<text>.*)$")
_CONT = re.compile(r"^ *#(?: (?P<text>.*))?$")
_DEFAULT = re.compile(r"^ *# @default -- ?(?P<text>.*)$")
_TYPE = re.compile(r"^\((?P<type>[a-zA-Z][\w/ ]*)\)\s*(?P<rest>.*)$")


class DocsError(ValueError):
    pass


@dataclass(frozen=True)
class ValueDoc:
    key: str
    type: str
    default: str
    description: str


def _type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return "null" if value is None else type(value).__name__


def _render_default(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=False)


def _lookup(values: Any, path: list[str]) -> Any:
    node = values
    for part in path:
        if not isinstance(node, dict) or part not in node:
            raise DocsError(f"documented key {'.'.join(path)} not found in the parsed values")
        node = node[part]
    return node


def parse(text: str) -> list[ValueDoc]:
    """Every documented key of a values.yaml text, in file order."""
    values = yaml.safe_load(text) or {}
    docs: list[ValueDoc] = []
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    pending: list[str] | None = None  # description lines of the `# --` comment being read
    default_override: str | None = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if m := _DEFAULT.match(line):
            default_override = m["text"].strip()
            continue
        if m := _DOC.match(line):
            pending = [m["text"].strip()]
            continue
        if pending is not None and (m := _CONT.match(line)):
            pending.append((m["text"] or "").strip())
            continue
        m = _KEY.match(line)
        if not m:
            if line.strip() and not line.lstrip().startswith("#") and not line.lstrip().startswith("-"):
                raise DocsError(f"values.yaml:{lineno}: cannot parse {line!r}")
            if not line.lstrip().startswith("#"):
                pending, default_override = None, None if line.strip() == "" else default_override
            continue
        indent = len(m["indent"])
        key = m["key"].strip('"')
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = [k for _, k in stack] + [key]
        stack.append((indent, key))
        if pending is None:
            default_override = None
            continue
        value = _lookup(values, path)
        description = " ".join(p for p in pending if p).strip()
        kind = _type_of(value)
        if t := _TYPE.match(description):
            kind, description = t["type"].strip(), t["rest"].strip()
        default = f"`{default_override}`" if default_override else f"`{_render_default(value)}`"
        docs.append(ValueDoc(key=".".join(path), type=kind, default=default, description=description))
        pending, default_override = None, None
    return docs


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(docs: list[ValueDoc]) -> str:
    lines = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    for d in docs:
        lines.append(f"| {_cell(d.key)} | {_cell(d.type)} | {_cell(d.default)} | {_cell(d.description)} |")
    return "\n".join(lines)


def render_readme(readme: str, values_text: str) -> str:
    if START not in readme or END not in readme:
        raise DocsError(f"README.md has no {START} ... {END} markers")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table(parse(values_text))}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--chart", type=Path, default=DEFAULT_CHART, help="chart directory (default: charts/ferryman)"
    )
    p.add_argument("--check", action="store_true", help="exit 1 when README.md's table is out of date")
    p.add_argument("--stdout", action="store_true", help="print the table instead of writing README.md")
    args = p.parse_args(argv)
    values_text = (args.chart / "values.yaml").read_text()
    try:
        if args.stdout:
            print(table(parse(values_text)))
            return 0
        readme_path = args.chart / "README.md"
        readme = readme_path.read_text()
        updated = render_readme(readme, values_text)
    except DocsError as err:
        print(f"helm-docs: {err}", file=sys.stderr)
        return 2
    if args.check:
        if updated != readme:
            print(
                f"{readme_path} values table is out of date: run python scripts/helm-docs.py", file=sys.stderr
            )
            return 1
        return 0
    if updated != readme:
        readme_path.write_text(updated)
        print(f"updated {readme_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
