"""Fences around the third-party internals ferryman relies on, one module per dependency.

Each fence checks, when it is imported, that the installed version is in the range ferryman was tested
with and that the private names it uses exist, and raises :class:`UnsupportedVersion` (an ``ImportError``)
naming the package, the range, the version found and what ferryman uses, instead of failing later on the
request path. The ranges match the upper bounds in ``pyproject.toml``.

* :mod:`ferryman._compat.prometheus` — prometheus_client's metric children and value class.
* ``ferryman_runtimes._compat.uvicorn_http`` — uvicorn's ``HttpToolsProtocol``, subclassed by the servers.
* ``ferryman_runtimes._compat.ray_serve`` — ``ray.serve._private`` (starting Serve, deploying a config).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from importlib import metadata


class UnsupportedVersion(ImportError):
    """An installed dependency is outside the range ferryman supports, or lacks an internal it uses."""


def parse(version: str) -> tuple[int, ...]:
    """The leading numeric release of a version string: ``"0.26.0rc1"`` -> ``(0, 26, 0)``."""
    match = re.match(r"\d+(?:\.\d+)*", version.strip())
    if match is None:
        raise UnsupportedVersion(f"cannot read version {version!r}")
    return tuple(int(part) for part in match.group(0).split("."))


def installed(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError as err:
        raise UnsupportedVersion(f"{distribution} is not installed") from err


def require(distribution: str, version: str, *, at_least: str, below: str, uses: str) -> str:
    """``version`` if ``at_least <= version < below``, else :class:`UnsupportedVersion` saying why."""
    if not parse(at_least) <= parse(version) < parse(below):
        raise UnsupportedVersion(
            f"ferryman supports {distribution}>={at_least},<{below} (it uses {uses}); found {version}. "
            f"Install a supported version: pip install '{distribution}>={at_least},<{below}'"
        )
    return version


def require_names(owner: object, names: Iterable[str], *, distribution: str, version: str) -> None:
    """Every name in ``names`` is an attribute of ``owner``, else :class:`UnsupportedVersion` listing them."""
    missing = [name for name in names if not hasattr(owner, name)]
    if missing:
        label = getattr(owner, "__qualname__", type(owner).__qualname__)
        raise UnsupportedVersion(
            f"{distribution} {version}: {label} lacks {', '.join(missing)}, which ferryman uses; "
            "install a supported version (see pyproject.toml)"
        )


def require_assigned(function: object, names: Iterable[str], *, distribution: str, version: str) -> None:
    """Every name in ``names`` is used by ``function``'s code (the attributes it sets on an instance, which
    no class attribute shows), else :class:`UnsupportedVersion` listing the missing ones."""
    code = getattr(function, "__code__", None)
    used = set(code.co_names) if code is not None else set()
    missing = [name for name in names if name not in used]
    if missing:
        raise UnsupportedVersion(
            f"{distribution} {version}: {getattr(function, '__qualname__', function)} no longer sets "
            f"{', '.join(missing)}, which ferryman uses; install a supported version (see pyproject.toml)"
        )
