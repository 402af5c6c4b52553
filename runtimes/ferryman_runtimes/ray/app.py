"""The application builder named by ``import_path`` in the Serve config (``ferryman_runtimes.ray.app:build``).

Ray calls it with the config's ``args`` both when ``ferryman up --runtime ray`` deploys locally and when
KubeRay applies ``serveConfigV2``; deployment options (replicas, ``user_config``, resources) come from the
config's ``deployments`` list, matched by the names used here.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from ferryman.serve_config import DEFAULT_INLINE_BELOW_MS, INGRESS, version_deployment
from ferryman.spec import parse_deployment
from ferryman_runtimes.ray.deployments import Ingress, VersionModel


def build(args: dict[str, Any]) -> Application:
    """``args``: ``{"deployment": <ModelDeployment dict>, "inline_below_ms": float, "dispatch": {v: mode}}``,
    plus ``"stats": {"actor", "namespace", "interval_s"}`` when a local rollout driver reads the requests."""
    deployment = args["deployment"]
    md = parse_deployment(deployment, source="serve args")  # fail the deploy early on a bad spec
    version_model: Any = VersionModel  # @serve.deployment turns the classes into Deployments
    ingress: Any = Ingress
    remotes = {
        v.name: version_model.options(name=version_deployment(v.name)).bind(deployment, v.name)
        for v in md.spec.versions
    }
    inline_below_ms = float(args.get("inline_below_ms", DEFAULT_INLINE_BELOW_MS))
    dispatch = {str(k): str(v) for k, v in (args.get("dispatch") or {}).items()}
    stats = args.get("stats") or None
    return ingress.options(name=INGRESS).bind(deployment, remotes, inline_below_ms, dispatch, stats)
