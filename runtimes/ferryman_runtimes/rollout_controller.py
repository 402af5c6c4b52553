"""The rollout driver of the local runtimes: runs the core state machine against exact per-version accounting.

Effects only: read stats, call the pure transition, apply the new traffic split, persist the state
atomically, publish metrics. A restart resumes from the saved state. An edit of the spec that changes the
rollout's identity (``rollout.rollout_identity``: model files, routing) starts a new rollout, with fresh
analysis inputs (the analysed versions' drift windows are reset); an edit of analysis settings applies in
place. Every reload attempt is recorded (``status()["specReload"]``), so a rejected edit stays visible.

Where the split is applied and where the stats come from are injected, so one driver serves both local
runtimes and belongs to neither: a :class:`RolloutTarget` (``ferryman_runtimes.gateway.target.GatewayTarget``:
the in-process gateway's table swap; ``ferryman_runtimes.ray.driver.RayTarget``: the Ray ingress
``user_config``) and a :class:`StatsSource` (``ferryman.accounting.Accounting`` itself, or on Ray a reader
of the one the ingress replicas feed).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ferryman import rollout
from ferryman.accounting import RouteTotals
from ferryman.analysis import VersionStats, wilson_interval
from ferryman.errors import FerrymanError, InvalidInput
from ferryman.rollout import RolloutDecision, RolloutState
from ferryman.spec import ModelDeployment, load_deployment
from ferryman.statefile import read_json, write_json

log = logging.getLogger("ferryman.rollout")

Seen = tuple[str, str, int | None]  # version, route, predicted class (None: no class output)


class StatsSource(Protocol):
    """Exact per-version accounting, as :class:`ferryman.accounting.Accounting` offers it."""

    def now(self) -> float: ...

    def window(self, version: str, *, since: float) -> VersionStats: ...

    def totals(self) -> list[RouteTotals]: ...


class DriftSource(Protocol):
    """Drift results per version, as :class:`ferryman.drift.DriftMonitor` offers them."""

    def drift_share(self, version: str) -> float | None: ...

    def measured_at(self, version: str) -> float | None:
        """Wall-clock time of the run behind :meth:`drift_share`."""

    def reset(self, version: str) -> None:
        """Forget the version's window and result: a new rollout is judged on its own rows only."""


class RolloutTarget(Protocol):
    """Where the driver's decisions take effect, and what it reads back from the serving side."""

    def apply(self, md: ModelDeployment, state: RolloutState) -> None:
        """Make traffic follow ``state`` (weights, sticky arms, shadow); idempotent."""

    def load(self, md: ModelDeployment, *, previous: ModelDeployment) -> None:
        """Make an edited spec's new or changed versions servable before anything switches (all or nothing);
        raise a :class:`FerrymanError` (and change nothing) when that is impossible."""

    def prediction(self, request_id: str) -> Seen | None: ...

    def forget(self, request_id: str) -> None: ...

    def shadow(self) -> dict[str, int]:
        """Shadow copies sent, failed and dropped so far."""


@dataclass
class Feedback:
    correct: int = 0
    total: int = 0


class RolloutController:
    def __init__(
        self,
        *,
        md: ModelDeployment,
        spec_path: Path | None,
        accounting: StatsSource,
        state_path: Path,
        target: RolloutTarget,
        drift: DriftSource | None = None,
        on_change: Callable[[RolloutState], None] | None = None,
        on_reload: Callable[[ModelDeployment], None] | None = None,
        on_reload_result: Callable[[str], None] | None = None,
        tick_seconds: float = 0.25,
    ) -> None:
        """``target`` is where decisions take effect. ``on_reload_result`` hears "accepted" or "rejected" for
        every attempt to adopt an edited spec."""
        self.md = md
        self.spec_path = spec_path
        self.target = target
        self.accounting = accounting
        self.state_path = state_path
        self.drift = drift
        self.on_change = on_change
        self.on_reload = on_reload  # e.g. observability: monitor the versions an edited spec added
        self.on_reload_result = on_reload_result
        self.last_reload: ReloadRecord | None = None
        self.tick_seconds = tick_seconds
        self.feedback: dict[str, Feedback] = {}
        self._spec_seen = _digest(spec_path) if spec_path else None
        saved = read_json(state_path)
        previous = None
        if saved:
            try:
                previous = RolloutState.from_dict(saved["state"])
                for arm, f in saved.get("feedback", {}).items():
                    self.feedback[arm] = Feedback(**f)
            except (KeyError, ValueError, TypeError) as err:
                log.error("ignoring unreadable rollout state in %s: %s", state_path, err)
        self.state, decision = rollout.reconcile_spec(previous, md, now=time.time())
        if decision is None:
            log.info(
                "resumed rollout from %s: phase %s, weights %s",
                state_path,
                self.state.phase.value,
                self.state.weights,
            )
        self._applied(decision)

    # -- effects ------------------------------------------------------------------------------------
    def _applied(self, decision: RolloutDecision | None) -> None:
        if decision is not None and decision.action == rollout.Action.start:
            self._fresh_inputs()
        self.target.apply(self.md, self.state)
        self.persist()
        if decision is not None:
            log.info(
                "rollout %s: %s -> weights %s (%s)",
                self.md.name,
                decision.action.value,
                decision.weights,
                decision.reason,
            )
        if self.on_change is not None:
            self.on_change(self.state)

    def _fresh_inputs(self) -> None:
        """A new rollout starts with its own analysis inputs: the versions it analyses lose the drift window
        and result of the previous rollout, and A/B feedback starts over. (Accounting windows and failure
        counters already start with the rollout: ``stats`` reads since the step began, ``start`` zeroes
        failures.)"""
        self.feedback = {}
        if self.drift is None:
            return
        for version in rollout.analysed_versions(self.state):
            try:
                self.drift.reset(version)
            except (
                Exception
            ):  # monitoring must never block a rollout; the start time still guards the analysis
                log.exception("resetting drift of %s failed", version)

    def persist(self) -> None:
        write_json(
            self.state_path,
            {"state": self.state.to_dict(), "feedback": {k: vars(v) for k, v in self.feedback.items()}},
        )

    def stats(self, version: str) -> VersionStats:
        elapsed = time.time() - self.state.step_started_at
        since = self.accounting.now() - max(elapsed, 0.0)
        s = self.accounting.window(version, since=since)
        if self.drift is not None:
            share = self.drift.drift_share(version)
            monitored = _has_reference(self.md, version)
            if share is not None or monitored:
                s = VersionStats(
                    **{
                        **_fields(s),
                        "drift_share": share,
                        "drift_pending": monitored and share is None,
                        "drift_measured_at": self.drift.measured_at(version),
                    }
                )
        return s

    # -- the loop -----------------------------------------------------------------------------------
    def step(self) -> RolloutDecision | None:
        self.state, decision = rollout.tick(self.state, self.md, stats=self.stats, now=time.time())
        if decision is not None:
            self._applied(decision)
        return decision

    async def step_off_loop(self) -> RolloutDecision | None:
        """:meth:`step`, with the analysis (copying a step's latencies, their quantiles: milliseconds per
        hundred thousand requests) on a worker thread, so the requests being served never wait for it. The
        decision is applied back on the loop, unless the state or the spec changed meanwhile (an admin action,
        a reload): then this tick's verdict is about a state that is gone, and it is dropped."""
        state, md = self.state, self.md
        now = time.time()
        new_state, decision = await asyncio.to_thread(rollout.tick, state, md, stats=self.stats, now=now)
        if self.state is not state or self.md is not md:
            return None
        self.state = new_state
        if decision is not None:
            self._applied(decision)
        return decision

    async def run(self) -> None:
        while True:
            try:
                self.check_spec()
                await self.step_off_loop()
            except Exception:  # the driver must outlive any single bad tick
                log.exception("rollout tick failed")
            await asyncio.sleep(self.tick_seconds)

    def check_spec(self) -> bool:
        """Reload the spec file when its content changed: new versions load fully before anything switches.

        Content, not mtime: an editor that truncates then writes can do both within one timestamp tick,
        and a reload attempted on the empty file in between must not hide the final content.
        """
        if self.spec_path is None:
            return False
        seen = _digest(self.spec_path)
        if seen is None or seen == self._spec_seen:
            return False
        try:
            return self.reload_spec() is not None
        except FerrymanError:
            return False  # logged and recorded by reload_spec

    def reload_spec(self) -> RolloutDecision | None:
        """Re-read the spec file now (the watch above, or admin /reload); raises when it cannot be adopted.

        Either way the attempt is recorded (``status()["specReload"]``): a rejected edit stays visible, with
        its error and time, until an edit is adopted."""
        if self.spec_path is None:
            raise InvalidInput("this gateway was not started from a spec file")
        self._spec_seen = _digest(self.spec_path)
        try:
            decision = self.reload(load_deployment(self.spec_path))
        except FerrymanError as err:
            log.error("spec reload rejected, still serving the previous spec: %s", err)
            self._record_reload(ReloadRecord(accepted=False, at=time.time(), error=str(err)))
            raise
        self._record_reload(ReloadRecord(accepted=True, at=time.time(), error=None))
        return decision

    def _record_reload(self, record: ReloadRecord) -> None:
        self.last_reload = record
        if self.on_reload_result is not None:
            try:
                self.on_reload_result(record.result)
            except Exception:  # metrics must never block a reload
                log.exception("on_reload_result hook failed")

    def reload(self, md: ModelDeployment) -> RolloutDecision | None:
        """Adopt an edited spec. Raises (and changes nothing) when a new version cannot be loaded."""
        if md.name != self.md.name:
            raise InvalidInput(
                f"spec renames the model from {self.md.name!r} to {md.name!r}; start a new ferryman up"
            )
        self.target.load(md, previous=self.md)
        self.md = md
        if self.on_reload is not None:
            try:
                self.on_reload(md)
            except Exception:  # monitoring must never block adopting a spec
                log.exception("on_reload hook failed")
        self.state, decision = rollout.reconcile_spec(self.state, md, now=time.time())
        self._applied(decision)
        return decision

    # -- control actions (admin API) ------------------------------------------------------------------
    def act(self, action: str, *, actor: str, reason: str, version: str | None = None) -> RolloutDecision:
        now = time.time()
        if action == "promote":
            self.state, decision = rollout.promote(
                self.state, now=now, reason=reason, actor=actor, version=version
            )
        elif action == "rollback":
            self.state, decision = rollout.rollback(self.state, now=now, reason=reason, actor=actor)
        elif action == "pause":
            self.state, decision = rollout.pause(self.state, now=now, reason=reason, actor=actor)
        elif action == "resume":
            self.state, decision = rollout.resume(self.state, now=now, reason=reason, actor=actor)
        else:
            raise InvalidInput(f"unknown action {action!r}")
        self._applied(decision)
        return decision

    def record_feedback(self, request_id: str, label: int) -> dict[str, Any]:
        seen = self.target.prediction(request_id)
        if seen is None:
            raise InvalidInput(f"unknown or expired request id {request_id!r}")
        version, _route, predicted = seen
        if predicted is None:
            raise InvalidInput(f"request {request_id!r} has no class prediction to score")
        f = self.feedback.setdefault(version, Feedback())
        f.total += 1
        f.correct += int(predicted == label)
        self.target.forget(request_id)
        self.persist()
        return {"version": version, "correct": predicted == label}

    # -- reporting ------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        s = self.state
        arms = []
        for t in self.accounting.totals():
            f = self.feedback.get(t.version)
            row: dict[str, Any] = {
                "version": t.version,
                "route": t.route,
                "requests": t.requests,
                "errors": t.errors,
                "errorRate": t.errors / t.requests if t.requests else 0.0,
                "p50Ms": _ms(t.p50_seconds),
                "p95Ms": _ms(t.p95_seconds),
                "p99Ms": _ms(t.p99_seconds),
            }
            if f is not None and f.total:
                lo, hi = wilson_interval(f.correct, f.total)
                row["accuracy"] = {
                    "correct": f.correct,
                    "total": f.total,
                    "value": f.correct / f.total,
                    "ci95": [lo, hi],
                }
            arms.append(row)
        return {
            "model": self.md.name,
            "rollout": s.to_dict(),
            "traffic": arms,
            "shadow": self.target.shadow(),
            "specReload": self.reload_status(),
        }

    def reload_status(self) -> dict[str, Any] | None:
        """The last attempt to adopt an edited spec (None: none yet), and whether the file on disk is what
        runs (it is not after a rejected edit, until an edit is adopted)."""
        if self.last_reload is None:
            return None
        doc = self.last_reload.to_dict()
        doc["specFile"] = str(self.spec_path) if self.spec_path else None
        doc["fileIsRunning"] = self.last_reload.accepted
        return doc


@dataclass(frozen=True, slots=True)
class ReloadRecord:
    accepted: bool
    at: float
    error: str | None

    @property
    def result(self) -> str:
        return "accepted" if self.accepted else "rejected"

    def to_dict(self) -> dict[str, Any]:
        return {"result": self.result, "at": self.at, "error": self.error}


def _digest(path: Path) -> bytes | None:
    try:
        return hashlib.blake2b(path.read_bytes(), digest_size=16).digest()
    except OSError:
        return None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _fields(s: VersionStats) -> dict[str, Any]:
    return {f: getattr(s, f) for f in s.__dataclass_fields__}


def _has_reference(md: ModelDeployment, version: str) -> bool:
    try:
        return md.spec.drift.enabled and md.spec.version(version).reference_data is not None
    except KeyError:
        return False
