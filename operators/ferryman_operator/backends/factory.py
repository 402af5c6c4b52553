"""The one place that maps ``spec.runtime`` to its backend."""

from __future__ import annotations

from ferryman.spec import Runtime
from ferryman_operator.backends.base import Backend
from ferryman_operator.backends.kserve import KServeBackend
from ferryman_operator.backends.native import NativeBackend
from ferryman_operator.backends.ray import RayBackend
from ferryman_operator.kube.kinds import Kind

_BACKENDS: dict[Runtime, Backend] = {
    Runtime.native: NativeBackend(),
    Runtime.ray: RayBackend(),
    Runtime.kserve: KServeBackend(),
}


def backend_for(runtime: Runtime) -> Backend:
    return _BACKENDS[runtime]


def all_kinds() -> tuple[Kind, ...]:
    """Every kind any backend creates: what pruning looks at (a runtime switch leaves nothing behind)."""
    seen: dict[str, Kind] = {}
    for backend in _BACKENDS.values():
        for kind in backend.kinds:
            seen.setdefault(kind.kind, kind)
    return tuple(seen.values())
