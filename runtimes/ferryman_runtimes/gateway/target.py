"""The in-process gateway as a rollout target (``ferryman up``'s native runtime): what the shared
``ferryman_runtimes.rollout_controller.RolloutController`` drives there."""

from __future__ import annotations

from ferryman import rollout
from ferryman.dataplane import load_versions
from ferryman.rollout import RolloutState
from ferryman.spec import ModelDeployment
from ferryman_runtimes.gateway.app import GatewayApp
from ferryman_runtimes.rollout_controller import Seen


class GatewayTarget:
    """The in-process gateway as a rollout target: a step is one atomic route-table swap."""

    def __init__(self, gateway: GatewayApp) -> None:
        self.gateway = gateway

    def apply(self, md: ModelDeployment, state: RolloutState) -> None:
        self.gateway.set_table(rollout.table_for(md, state))

    def load(self, md: ModelDeployment, *, previous: ModelDeployment) -> None:
        repo = self.gateway.repository
        have = repo.models.get(md.name, {})
        changed = [
            v.name
            for v in md.spec.versions
            if v.name not in have or _uri_changed(previous, v.name, v.uri, v.sha256)
        ]
        fresh = load_versions(md, versions=changed)  # all or nothing: on failure the old set keeps serving
        for model in fresh:
            repo.add(model)

    def prediction(self, request_id: str) -> Seen | None:
        return self.gateway.prediction(request_id)

    def forget(self, request_id: str) -> None:
        self.gateway.forget(request_id)

    def shadow(self) -> dict[str, int]:
        g = self.gateway
        return {"requests": g.shadow_requests, "errors": g.shadow_errors, "dropped": g.shadow_dropped}


def _uri_changed(md: ModelDeployment, version: str, uri: str, sha: str | None) -> bool:
    try:
        old = md.spec.version(version)
    except KeyError:
        return True
    return old.uri != uri or old.sha256 != sha
