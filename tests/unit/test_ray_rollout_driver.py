"""The Ray rollout driver's pure parts: the stats fan-in (shipper -> hub), the config rewrite, the Ray target,
and the gateway's RolloutController driving a target that is not a gateway. No Ray, no sockets."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ferryman.errors import InvalidInput
from ferryman.rollout import Phase, start
from ferryman.serve_config import route_config, serve_config
from ferryman.spec import ModelDeployment, parse_deployment
from ferryman.telemetry import RequestRecord
from ferryman_runtimes.ray.driver import RayTarget, with_route
from ferryman_runtimes.ray.stats import Counters, Row, StatsHub, StatsShipper
from ferryman_runtimes.rollout_controller import RolloutController


def deployment(*, interval: float = 1.0, min_requests: int = 5) -> ModelDeployment:
    return parse_deployment(
        {
            "apiVersion": "serving.ferryman.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "m"},
            "spec": {
                "versions": [{"name": v, "uri": f"/models/{v}.onnx"} for v in ("v1", "v2")],
                "budget": {"p99Ms": 100, "maxErrorRate": 0.01},
                "drift": {"enabled": False},
                "traffic": {
                    "strategy": "canary",
                    "stable": "v1",
                    "candidate": "v2",
                    "canary": {
                        "steps": [20, 100],
                        "intervalSeconds": interval,
                        "failureThreshold": 2,
                        "minRequests": min_requests,
                    },
                },
            },
        }
    )


def record(
    version: str, *, route: str = "candidate", code: int = 200, seconds: float = 0.01
) -> RequestRecord:
    return RequestRecord(model="m", version=version, route=route, protocol="v2", code=code, seconds=seconds)


class Sink:
    """A real destination for a shipper: keeps every batch (or fails while ``failing``)."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[Row], Counters, int]] = []
        self.failing = False
        self.lock = threading.Lock()

    def __call__(self, rows: list[Row], counters: Counters, dropped: int) -> None:
        if self.failing:
            raise ConnectionError("hub unreachable")
        with self.lock:
            self.batches.append((rows, counters, dropped))

    def rows(self) -> list[Row]:
        with self.lock:
            return [r for b in self.batches for r in b[0]]


# -- the hub ---------------------------------------------------------------------------------------------
def test_hub_accounts_every_replica_exactly() -> None:
    hub = StatsHub(model="m", clock=lambda: 100.0)
    hub.record("a", [("v1", "stable", 200, 0.010, 10.0), ("v2", "candidate", 200, 0.020, 10.5)])
    hub.record("b", [("v2", "candidate", 503, 0.030, 11.0), ("v2", "candidate", 200, 0.040, 12.0)])
    w = hub.window("v2", 0.0)
    assert (w.requests, w.errors) == (3, 1)
    assert w.p99_seconds == pytest.approx(0.040)
    assert hub.window("v1", 0.0).requests == 1
    assert {(t.version, t.route): t.requests for t in hub.totals()} == {
        ("v1", "stable"): 1,
        ("v2", "candidate"): 3,
    }
    assert hub.received == 4
    assert hub.now() == 100.0


def test_hub_windows_by_finish_time_never_going_backwards() -> None:
    hub = StatsHub(model="m")
    hub.record("a", [("v2", "candidate", 200, 0.01, 10.0), ("v2", "candidate", 200, 0.01, 20.0)])
    # a slower replica's batch arrives later with earlier finish times: stamped at the latest time seen
    hub.record("b", [("v2", "candidate", 200, 0.01, 15.0)])
    hub.record("a", [("v2", "candidate", 200, 0.01, 30.0)])
    assert hub.window("v2", 0.0).requests == 4
    assert hub.window("v2", 19.0).requests == 3
    assert hub.window("v2", 25.0).requests == 1
    assert hub.window("v2", 31.0).requests == 0


def test_hub_sums_shadow_counters_over_replicas() -> None:
    hub = StatsHub(model="m")
    hub.record("a", [], (5, 1, 0))
    hub.record("b", [], (3, 0, 2), 7)
    hub.record("a", [], (6, 1, 0))  # running totals: the latest per replica counts
    assert hub.shadow() == {"requests": 9, "errors": 1, "dropped": 2, "statsDropped": 7}


# -- the shipper -----------------------------------------------------------------------------------------
def test_shipper_keeps_what_accounting_keeps_and_ships_in_order() -> None:
    sink = Sink()
    shipper = StatsShipper(sink, counters=lambda: (4, 1, 0))
    shipper.finished(record("v1", route="stable"), None, None)
    shipper.finished(record("", code=400), None, None)  # failed before routing
    shipper.finished(record("v2", code=422), None, None)  # the caller's mistake
    shipper.finished(record("v2", code=503, seconds=0.5), None, None)
    assert shipper.flush() == 2
    [(rows, counters, dropped)] = sink.batches
    assert [(v, r, c, s) for v, r, c, s, _ in rows] == [
        ("v1", "stable", 200, 0.01),
        ("v2", "candidate", 503, 0.5),
    ]
    assert rows[0][4] <= rows[1][4] <= time.time()
    assert (counters, dropped) == ((4, 1, 0), 0)
    assert shipper.flush() == 0 and len(sink.batches) == 2  # counters travel even without rows


def test_shipper_counts_what_it_could_not_ship_and_recovers() -> None:
    sink = Sink()
    shipper = StatsShipper(sink, max_pending=3)
    for _ in range(5):
        shipper.finished(record("v2"), None, None)
    sink.failing = True
    assert shipper.flush() == 0
    assert shipper.dropped == 5  # 2 over the bound, 3 lost with the failed batch
    sink.failing = False
    shipper.finished(record("v2"), None, None)
    assert shipper.flush() == 1
    assert sink.batches[-1][2] == 5


def test_shipper_thread_ships_a_few_times_a_second_and_close_flushes() -> None:
    sink = Sink()
    shipper = StatsShipper(sink, interval=0.05).start()
    try:
        for _ in range(10):
            shipper.finished(record("v2"), None, None)
        deadline = time.monotonic() + 5
        while len(sink.rows()) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(sink.rows()) == 10
        shipper.finished(record("v1"), None, None)
    finally:
        shipper.close()
    assert len(sink.rows()) == 11
    assert shipper.shipped == 11


def test_shipper_into_hub_matches_direct_accounting() -> None:
    hub = StatsHub(model="m")

    def to_hub(name: str) -> Callable[[list[Row], Counters, int], None]:
        def send(rows: list[Row], counters: Counters, dropped: int) -> None:
            hub.record(name, rows, counters, dropped)

        return send

    shippers = [StatsShipper(to_hub(name)) for name in ("a", "b")]
    for i in range(100):
        shippers[i % 2].finished(record("v2" if i % 5 == 0 else "v1", seconds=i / 1000.0), None, None)
    for s in shippers:
        s.flush()
    assert hub.window("v2", 0.0).requests == 20
    assert hub.window("v1", 0.0).requests == 80
    assert hub.window("v2", 0.0).p99_seconds == pytest.approx(0.095)


# -- the config rewrite and the target -----------------------------------------------------------------
def test_with_route_changes_only_the_ingress_user_config() -> None:
    md = deployment()
    config = serve_config(
        md, state=start(md, now=0.0)[0], cpus=2, metrics_dir="/tmp/x", host="127.0.0.1", port=1
    )
    before = copy.deepcopy(config)
    route = {
        "strategy": "canary",
        "phase": "Promoted",
        "stable": "v2",
        "candidate": None,
        "weights": {"v2": 100},
    }
    out = with_route(config, route)
    assert config == before  # not mutated
    assert out["applications"][0]["deployments"][0]["user_config"] == route
    out["applications"][0]["deployments"][0]["user_config"] = before["applications"][0]["deployments"][0][
        "user_config"
    ]
    assert out == before
    with pytest.raises(ValueError, match="ingress"):
        with_route({"applications": [{"deployments": [{"name": "other"}]}]}, route)


def test_ray_target_deploys_each_new_split_once_and_retries_a_failed_one() -> None:
    md = deployment()
    first = start(md, now=0.0)[0]
    deployed: list[dict[str, Any]] = []
    failing = [False]

    def deploy(route: dict[str, Any]) -> None:
        if failing[0]:
            raise RuntimeError("controller busy")
        deployed.append(route)

    target = RayTarget()
    target.apply(md, first)  # not deployed yet: remembered only
    assert target.route == route_config(md, first) and deployed == []
    target.attach(deploy, deployed_route=route_config(md, first))
    assert deployed == []  # Serve already runs this split
    target.apply(md, first)
    assert deployed == []
    from ferryman import rollout

    promoted = rollout.promote(first, now=1.0)[0]
    failing[0] = True
    target.apply(md, promoted)  # logged, not raised: the decision stands and is retried
    assert deployed == []
    failing[0] = False
    assert target.sync() is True
    assert deployed == [route_config(md, promoted)]
    assert target.sync() is False


def test_ray_target_refuses_spec_edits_and_feedback() -> None:
    md = deployment()
    target = RayTarget(shadow=lambda: {"requests": 1, "errors": 0, "dropped": 0})
    with pytest.raises(InvalidInput, match="restart"):
        target.load(md, previous=md)
    with pytest.raises(InvalidInput, match="gateway runtime"):
        target.prediction("abc")
    assert target.shadow()["requests"] == 1


def test_rollout_controller_drives_a_ray_target_from_hub_stats(tmp_path: Path) -> None:
    md = deployment(interval=0.001, min_requests=5)
    hub = StatsHub(model="m")
    deployed: list[dict[str, Any]] = []
    target = RayTarget(shadow=hub.shadow)
    controller = RolloutController(
        md=md,
        spec_path=None,
        target=target,
        accounting=hub.accounting,
        state_path=tmp_path / "m.rollout.json",
    )
    target.attach(deployed.append, deployed_route=route_config(md, controller.state))
    assert controller.state.weights == {"v1": 80, "v2": 20}
    hub.record("a", [("v2", "candidate", 200, 0.01, time.time() + 1) for _ in range(10)], (2, 0, 0))
    time.sleep(0.01)
    controller.step()  # the first step passes: 100 %
    assert controller.state.weights == {"v2": 100}
    hub.record("a", [("v2", "candidate", 200, 0.01, time.time() + 2) for _ in range(10)], (2, 0, 0))
    time.sleep(0.01)
    controller.step()  # the last step passes: promoted
    assert controller.state.phase == Phase.promoted
    assert [(r["phase"], r["weights"]) for r in deployed] == [
        ("Progressing", {"v2": 100}),
        ("Promoted", {"v2": 100}),
    ]
    controller.act("rollback", actor="t", reason="undo")
    assert deployed[-1] == {
        "strategy": "canary",
        "phase": "RolledBack",
        "stable": "v1",
        "candidate": "v2",
        "weights": {"v1": 100},
    }
    status = controller.status()
    assert status["shadow"]["requests"] == 2
    assert {(r["version"], r["route"]): r["requests"] for r in status["traffic"]} == {("v2", "candidate"): 20}
    # a restart resumes from the state file
    again = RolloutController(
        md=md,
        spec_path=None,
        target=RayTarget(),
        accounting=hub.accounting,
        state_path=tmp_path / "m.rollout.json",
    )
    assert again.state.phase == Phase.rolled_back


class SlowStats:
    """A stats source whose window blocks until released (an analysis over millions of requests)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.entered = threading.Event()
        self.release = threading.Event()

    def now(self) -> float:
        return float(self.inner.now())

    def window(self, version: str, *, since: float) -> Any:
        self.entered.set()
        assert self.release.wait(10), "never released"
        return self.inner.window(version, since=since)

    def totals(self) -> Any:
        return self.inner.totals()


def test_the_analysis_runs_off_the_event_loop_and_a_stale_verdict_is_dropped(tmp_path: Path) -> None:
    import asyncio

    md = deployment(interval=0.001, min_requests=5)
    hub = StatsHub(model="m")
    slow = SlowStats(hub.accounting)
    controller = RolloutController(
        md=md, spec_path=None, target=RayTarget(), accounting=slow, state_path=tmp_path / "m.rollout.json"
    )
    hub.record("a", [("v2", "candidate", 200, 0.01, time.time() + 1) for _ in range(10)], (0, 0, 0))
    time.sleep(0.01)

    async def scenario(act: bool) -> tuple[Any, int]:
        ticks = 0

        async def other_work() -> None:  # what the serving loop does meanwhile
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        worker = asyncio.create_task(other_work())
        step = asyncio.create_task(controller.step_off_loop())
        assert await asyncio.to_thread(slow.entered.wait, 10)
        before = ticks
        await asyncio.sleep(0.1)
        busy_ticks = ticks - before  # the loop kept running while the analysis was blocked
        if act:
            controller.act("pause", actor="t", reason="an operator acts mid-analysis")
        slow.release.set()
        decision = await step
        worker.cancel()
        return decision, busy_ticks

    decision, busy = asyncio.run(scenario(act=True))
    assert busy >= 5
    assert (
        decision is None and controller.state.phase == Phase.paused
    )  # the verdict on the old state: dropped
    assert controller.state.weights == {"v1": 80, "v2": 20}
    controller.act("resume", actor="t", reason="go on")
    slow.entered.clear()
    time.sleep(0.01)
    decision, _ = asyncio.run(scenario(act=False))
    assert decision is not None and controller.state.weights == {"v2": 100}  # applied when nothing changed
