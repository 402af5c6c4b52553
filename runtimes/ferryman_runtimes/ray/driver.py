"""The local rollout driver on Ray: the gateway runtime's ``RolloutController`` and admin API, Ray adapters.

``ferryman up SPEC --runtime ray`` runs the same driver as the gateway runtime
(:class:`~ferryman_runtimes.rollout_controller.RolloutController`: stats -> ``rollout.tick`` -> apply ->
persist) with two adapters:

* :class:`RayTarget` applies a state by re-deploying the launcher's Serve config with only the ingress
  ``user_config`` replaced by ``route_config(md, state)`` (:func:`with_route`): Serve calls
  ``reconfigure()`` on the running ingress replicas, an atomic table swap without a restart. Everything
  else in the config stays byte-for-byte the same (or Serve would restart replicas).
* :class:`HubStats` reads the exact per-version stats the ingress replicas ship to the
  :class:`~ferryman_runtimes.ray.stats.StatsHub` actor.

:func:`serve_admin` runs the driver loop and the gateway's token-guarded ``AdminApp`` on the admin port in
the launcher process, and writes ``admin.json`` so ``ferryman status | promote | rollback | pause |
resume`` find it. State is persisted like the gateway's (``<state-dir>/<model>.rollout.json``), so a
restart resumes: the launcher deploys the resumed state's split from the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferryman.accounting import RouteTotals
from ferryman.analysis import VersionStats
from ferryman.errors import FerrymanError, InvalidInput
from ferryman.rollout import RolloutState
from ferryman.serve_config import INGRESS, route_config
from ferryman.spec import ModelDeployment
from ferryman_runtimes.rollout_controller import RolloutController, Seen

log = logging.getLogger("ferryman.ray")

Deployer = Callable[[dict[str, Any]], None]  # applies an ingress user_config (a route config)
RPC_TIMEOUT_S = 30.0


def with_route(config: dict[str, Any], route: dict[str, Any]) -> dict[str, Any]:
    """A copy of a Serve config whose ingress ``user_config`` is ``route``; nothing else differs."""
    out = copy.deepcopy(config)
    found = 0
    for app in out["applications"]:
        for deployment in app.get("deployments", []):
            if deployment.get("name") == INGRESS:
                deployment["user_config"] = copy.deepcopy(route)
                found += 1
    if found != 1:
        raise ValueError(f"expected one {INGRESS!r} deployment in the Serve config, found {found}")
    return out


class RayTarget:
    """Rollout target for the Ray ingress: a new split is a new ingress ``user_config``.

    Until :meth:`attach` (the app is not deployed yet) it only remembers the split to deploy with; after
    that each change is applied once (an unchanged split is not re-deployed, a failed apply is retried by
    the next :meth:`apply` of the same state).
    """

    def __init__(self, *, shadow: Callable[[], dict[str, int]] | None = None) -> None:
        self.route: dict[str, Any] | None = None  # wanted
        self.applied: dict[str, Any] | None = None  # last one Serve accepted
        self._deploy: Deployer | None = None
        self._shadow = shadow  # the replicas report their shadow counters to the hub

    def attach(self, deploy: Deployer, *, deployed_route: dict[str, Any]) -> None:
        self._deploy = deploy
        self.applied = deployed_route
        self.sync()

    def apply(self, md: ModelDeployment, state: RolloutState) -> None:
        self.route = route_config(md, state)
        try:
            self.sync()
        except Exception:  # the state is decided and persisted either way; the driver's resync retries
            log.exception("could not apply the traffic split %s yet; retrying", self.route["weights"])

    def sync(self) -> bool:
        """Deploy the wanted split if Serve does not have it yet; True when something was deployed."""
        route = self.route
        if self._deploy is None or route is None or route == self.applied:
            return False
        self._deploy(route)
        self.applied = route
        log.info("ingress traffic split now %s (%s)", route["weights"], route["phase"])
        return True

    def load(self, md: ModelDeployment, *, previous: ModelDeployment) -> None:
        raise InvalidInput(
            "a spec edit is not adopted live with --runtime ray (the Serve application's args "
            "carry the spec, so it would restart every replica): restart `ferryman up`"
        )

    def prediction(self, request_id: str) -> Seen | None:
        raise InvalidInput(
            "A/B feedback needs the gateway runtime: the Ray ingress keeps no per-request answers"
        )

    def forget(self, request_id: str) -> None:
        return None

    def shadow(self) -> dict[str, int]:
        return self._shadow() if self._shadow is not None else {}


class HubStats:
    """A :class:`~ferryman_runtimes.rollout_controller.StatsSource` reading the hub actor."""

    def __init__(self, hub: Any, *, timeout: float = RPC_TIMEOUT_S) -> None:
        self.hub = hub
        self.timeout = timeout

    def _get(self, ref: Any) -> Any:
        import ray

        try:
            return ray.get(ref, timeout=self.timeout)
        except Exception as err:
            raise FerrymanError(f"request stats unavailable: {type(err).__name__}: {err}") from err

    def now(self) -> float:
        return time.time()  # the hub stamps records in wall-clock time (one machine)

    def window(self, version: str, *, since: float) -> VersionStats:
        stats: VersionStats = self._get(self.hub.window.remote(version, since))
        return stats

    def totals(self) -> list[RouteTotals]:
        totals: list[RouteTotals] = self._get(self.hub.totals.remote())
        return totals

    def shadow(self) -> dict[str, int]:
        shadow: dict[str, int] = self._get(self.hub.shadow.remote())
        return shadow


@dataclass
class Driver:
    controller: RolloutController
    target: RayTarget
    stats: HubStats
    token: str
    state_dir: Path

    @property
    def state(self) -> RolloutState:
        return self.controller.state

    def attach(self, *, hub: Any, deploy: Deployer, deployed_route: dict[str, Any]) -> None:
        """Ray is up and the app deployed (with ``deployed_route``): from now on decisions re-deploy."""
        self.stats.hub = hub
        self.target.attach(deploy, deployed_route=deployed_route)


def prepare(spec_path: Path, *, state_dir: Path, tick_seconds: float = 0.25) -> Driver:
    """The driver, before Ray starts: it resumes (or starts) the rollout, so the first deploy has its split.
    Nothing is applied until :meth:`Driver.attach`."""
    from ferryman.spec import load_deployment
    from ferryman_runtimes.gateway.up import admin_token

    md = load_deployment(spec_path)
    stats = HubStats(None)
    target = RayTarget(shadow=stats.shadow)
    controller = RolloutController(
        md=md,
        spec_path=spec_path,
        target=target,
        accounting=stats,
        state_path=state_dir / f"{md.name}.rollout.json",
        tick_seconds=tick_seconds,
    )
    return Driver(controller, target, stats, admin_token(state_dir), state_dir)


async def serve_admin(driver: Driver, *, host: str, port: int, gateway_url: str, stopping: list[int]) -> None:
    """The driver loop and the admin API until a signal lands in ``stopping``; persists the state on the way
    out."""
    import uvicorn

    from ferryman.statefile import write_json
    from ferryman_runtimes.gateway.admin import AdminApp
    from ferryman_runtimes.gateway.up import ADMIN_FILE
    from ferryman_runtimes.native.server import uvicorn_options

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:  # the launcher owns SIGINT/SIGTERM
            yield

    controller, target, state_dir = driver.controller, driver.target, driver.state_dir
    opts = uvicorn_options(host=host, port=port)
    opts.pop("workers")
    opts["lifespan"] = "off"
    admin = _Server(uvicorn.Config(AdminApp(controller, token=driver.token), **opts))
    write_json(
        state_dir / ADMIN_FILE,
        {
            "url": f"http://{host}:{port}",
            "model": controller.md.name,
            "gateway": gateway_url,
            "runtime": "ray",
            "pid": os.getpid(),
        },
    )

    async def resync() -> None:  # retry a split Serve did not accept when it was decided
        while True:
            try:
                target.sync()
            except Exception:
                log.exception("applying the traffic split failed; retrying")
            await asyncio.sleep(1.0)

    async def watch() -> None:
        while not stopping and not admin.should_exit:
            await asyncio.sleep(0.2)
        admin.should_exit = True

    tasks = [asyncio.create_task(t) for t in (controller.run(), resync(), watch())]
    try:
        await admin.serve()
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        controller.persist()
