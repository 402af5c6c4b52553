"""Look up runtime launchers registered under the ``ferryman.runtimes`` entry-point group.

The core never imports a web framework or Ray; the runtimes package registers its launchers here.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from ferryman.errors import FerrymanError


def launcher(name: str) -> Callable[..., Any]:
    found = {ep.name: ep for ep in entry_points(group="ferryman.runtimes")}
    if name not in found:
        raise FerrymanError(
            f"runtime {name!r} is not installed (available: {', '.join(sorted(found)) or 'none'})"
        )
    return found[name].load()
