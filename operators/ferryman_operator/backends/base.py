"""The backend interface: how one runtime (native, ray, kserve) realises a ModelDeployment. Pure.

A backend only *describes*: the objects that should exist for a spec and a route table, which objects
tell whether each version is ready, and how to read their status. The controller applies, prunes and
observes; backends never touch the API. One file per backend, one factory (``backends.factory``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ferryman.rollout import RolloutState
from ferryman.routing import RouteTable
from ferryman.spec import ModelDeployment
from ferryman_operator.kube.kinds import Kind
from ferryman_operator.settings import Settings

Ref = tuple[Kind, str]  # (kind, name) in the ModelDeployment's namespace
Observed = Mapping[tuple[str, str], dict[str, Any] | None]  # (kind name, object name) -> object or None


@dataclass(frozen=True)
class Context:
    md: ModelDeployment
    namespace: str
    owner: dict[str, Any]  # the owner reference every object carries
    state: RolloutState  # the rollout state to realise
    table: RouteTable  # its traffic split (rollout.table_for(md, state))
    settings: Settings


@dataclass(frozen=True)
class Readiness:
    """Per version: ready or not, with a human reason; ``frontend`` is the gateway/ingress."""

    versions: dict[str, tuple[bool, str]] = field(default_factory=dict)
    frontend: tuple[bool, str] = (True, "")

    def version_ready(self, version: str) -> bool:
        return self.versions.get(version, (False, ""))[0]

    def unready(self, versions: list[str] | tuple[str, ...]) -> list[str]:
        """Messages for the given versions (and the frontend) that are not ready."""
        out = [
            self.versions.get(v, (False, f"{v}: not deployed"))[1] or f"{v}: not ready"
            for v in versions
            if not self.version_ready(v)
        ]
        if not self.frontend[0]:
            out.append(self.frontend[1] or "frontend not ready")
        return out


class Backend(Protocol):
    name: str
    kinds: tuple[Kind, ...]  # every kind this backend creates (for pruning)

    def validate(self, md: ModelDeployment, settings: Settings) -> list[str]:
        """Spec problems specific to this runtime (empty when the spec can run here)."""
        ...

    def desired(self, ctx: Context) -> list[dict[str, Any]]:
        """Every object that should exist, fully specified (for server-side apply)."""
        ...

    def watched(self, md: ModelDeployment) -> list[Ref]:
        """The objects whose status says whether the versions are ready."""
        ...

    def readiness(self, md: ModelDeployment, observed: Observed) -> Readiness: ...

    def endpoint(self, md: ModelDeployment, namespace: str) -> str:
        """The in-cluster URL clients call."""
        ...


def condition(obj: Mapping[str, Any] | None, kind: str) -> tuple[str, str]:
    """(status, message) of a status condition (KServe/KubeRay style), ``("Unknown", "")`` when absent."""
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return str(c.get("status", "Unknown")), str(c.get("message") or c.get("reason") or "")
    return "Unknown", ""


def deployment_ready(obj: Mapping[str, Any] | None, *, what: str) -> tuple[bool, str]:
    """A Deployment is ready when its current generation has rolled out and every replica is available."""
    if obj is None:
        return False, f"{what}: Deployment not found"
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    want = int(spec.get("replicas", 1))
    if int(status.get("observedGeneration", 0)) < int(obj["metadata"].get("generation", 1)):
        return False, f"{what}: rollout of the new pod template not observed yet"
    updated = int(status.get("updatedReplicas", 0))
    available = int(status.get("availableReplicas", 0))
    if want == 0:
        return False, f"{what}: scaled to 0 replicas"
    if updated < want or available < want:
        return False, f"{what}: {min(updated, available)}/{want} replicas ready"
    return True, f"{what}: {available}/{want} replicas ready"
