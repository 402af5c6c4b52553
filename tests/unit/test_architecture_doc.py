"""docs/architecture.md against the code: every module of the three packages is named, every ``.py`` path it
names exists (relative to a package or to the repository)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
PACKAGES = (
    ROOT / "platform" / "ferryman",
    ROOT / "runtimes" / "ferryman_runtimes",
    ROOT / "operators" / "ferryman_operator",
)


def _code_spans() -> list[str]:
    text = re.sub(r"```.*?```", "", DOC.read_text(), flags=re.S)  # fenced diagrams are not names
    return re.findall(r"`([^`\n]+)`", text)


def _modules() -> list[Path]:
    return [
        path
        for package in PACKAGES
        for path in sorted(package.rglob("*.py"))
        if path.name not in ("__init__.py", "__main__.py") and not path.name.endswith("_pb2.py")
    ]


def test_every_module_is_named() -> None:
    spans = " ".join(_code_spans())
    missing = [
        str(path.relative_to(ROOT))
        for path in _modules()
        if not re.search(rf"(?<!\w){re.escape(path.stem)}(?!\w)", spans)
    ]
    assert not missing, f"modules docs/architecture.md does not name: {missing}"


def test_every_named_path_exists() -> None:
    named = {span for span in _code_spans() if re.fullmatch(r"[\w./-]+\.py", span)}
    assert named, "the document names no .py path: the pattern above no longer matches its style"
    tops = (*PACKAGES, ROOT / "loadtests")
    bases = [ROOT, *tops, *(p for top in tops for p in top.iterdir() if p.is_dir())]
    stale = sorted(span for span in named if not any((base / span).is_file() for base in bases))
    assert not stale, f"docs/architecture.md names files that do not exist: {stale}"
