"""The rollout state machine: pure functions from (state, inputs, now) to (state, decision).

Strategies: canary (weighted steps with analysis), blue-green (analysis of the preview, then an atomic
switch), A/B (runs until stopped, reports per arm), shadow (mirror to the candidate, analysis reported),
static. Every transition records a :class:`RolloutDecision` with a reason in the bounded history. The same
functions run in `ferryman up` (local driver) and in the Kubernetes operator (status-backed driver).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from ferryman.analysis import Analysis, Outcome, VersionStats, analyze
from ferryman.errors import Conflict
from ferryman.routing import RouteTable, initial_table
from ferryman.spec import ModelDeployment, Strategy

HISTORY_LIMIT = 50


class Phase(StrEnum):
    stable = "Stable"  # nothing rolling out
    progressing = "Progressing"  # canary stepping / blue-green preview under analysis
    running = "Running"  # A/B test or shadow: runs until stopped
    paused = "Paused"
    promoted = "Promoted"
    rolled_back = "RolledBack"


class Action(StrEnum):
    start = "start"
    wait = "wait"
    hold = "hold"
    advance = "advance"
    promote = "promote"
    rollback = "rollback"
    pause = "pause"
    resume = "resume"
    report = "report"


@dataclass(frozen=True, slots=True)
class RolloutDecision:
    action: Action
    reason: str
    at: float
    weights: dict[str, int]
    actor: str = "controller"

    def to_dict(self, *, iso_times: bool = False) -> dict[str, Any]:
        d = asdict(self)
        d["action"] = self.action.value
        if iso_times:
            d["at"] = iso_time(self.at)
        return d


@dataclass(frozen=True, slots=True)
class RolloutState:
    strategy: Strategy
    phase: Phase
    stable: str
    candidate: str | None
    weights: dict[str, int]
    step_index: int = -1
    failures: int = 0
    step_started_at: float = 0.0
    analyzed_at: float = 0.0  # the window grows from step_started_at; analyses run once per interval
    previous_stable: str | None = None
    resume_phase: Phase | None = None
    last_analysis: Analysis | None = None
    history: tuple[RolloutDecision, ...] = field(default_factory=tuple)
    spec_hash: str = ""  # the rollout_identity of the spec this rollout realises
    started_at: float = 0.0  # when this rollout began: analysis inputs from before it belong to another one

    @property
    def active(self) -> bool:
        return self.phase in (Phase.progressing, Phase.running)

    def to_dict(self, *, iso_times: bool = False) -> dict[str, Any]:
        """The state as JSON. ``iso_times``: times as RFC 3339 strings instead of epoch seconds (a Kubernetes
        status, where ``kubectl describe`` would print 1.7966212031945755e+09); :meth:`from_dict` reads
        both."""
        t = iso_time if iso_times else float
        return {
            "strategy": self.strategy.value,
            "phase": self.phase.value,
            "stable": self.stable,
            "candidate": self.candidate,
            "weights": dict(self.weights),
            "stepIndex": self.step_index,
            "failures": self.failures,
            "stepStartedAt": t(self.step_started_at),
            "analyzedAt": t(self.analyzed_at),
            "previousStable": self.previous_stable,
            "resumePhase": self.resume_phase.value if self.resume_phase else None,
            "lastAnalysis": self.last_analysis.to_dict() if self.last_analysis else None,
            "history": [d.to_dict(iso_times=iso_times) for d in self.history],
            "specHash": self.spec_hash,
            "startedAt": t(self.started_at),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RolloutState:
        return cls(
            strategy=Strategy(d["strategy"]),
            phase=Phase(d["phase"]),
            stable=d["stable"],
            candidate=d.get("candidate"),
            weights={k: int(v) for k, v in d["weights"].items()},
            step_index=int(d.get("stepIndex", -1)),
            failures=int(d.get("failures", 0)),
            step_started_at=epoch_seconds(d.get("stepStartedAt", 0.0)),
            analyzed_at=epoch_seconds(d.get("analyzedAt", 0.0)),
            previous_stable=d.get("previousStable"),
            resume_phase=Phase(d["resumePhase"]) if d.get("resumePhase") else None,
            last_analysis=Analysis.from_dict(d["lastAnalysis"]) if d.get("lastAnalysis") else None,
            history=tuple(
                RolloutDecision(
                    action=Action(h["action"]),
                    reason=h["reason"],
                    at=epoch_seconds(h["at"]),
                    weights=h["weights"],
                    actor=h.get("actor", "controller"),
                )
                for h in d.get("history", [])
            ),
            spec_hash=d.get("specHash", ""),
            started_at=epoch_seconds(d.get("startedAt", 0.0)),
        )


def iso_time(seconds: float) -> str:
    """Epoch seconds as RFC 3339 UTC with microseconds (``1970-01-01T00:00:00Z`` for the 0 of "never")."""
    stamp = datetime.fromtimestamp(seconds, tz=UTC)
    return (
        stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if stamp.microsecond else stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    )


def epoch_seconds(value: Any) -> float:
    """A time as :meth:`RolloutState.to_dict` writes it (epoch seconds, or an RFC 3339 string) in seconds."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError as err:
            raise ValueError(f"not a time: {value!r}") from err
    return float(value)


def rollout_identity(md: ModelDeployment) -> str:
    """Identity of what is being rolled out: what decides where traffic goes.

    Each version's name, model file and checksum, and the traffic section's routing: strategy, stable,
    candidate, canary steps, A/B weights and stickiness, shadow percentage, pin header. Analysis timing and
    thresholds (intervals, failure thresholds, minimum requests, auto-promotion, the budget, drift settings)
    are not in it: editing them applies to the running rollout in place. Scaling (replicas, resources) is
    not a new rollout either.
    """
    spec = md.spec
    t = spec.traffic
    doc = {
        "versions": [{"name": v.name, "uri": v.uri, "sha256": v.sha256} for v in spec.versions],
        "routing": {
            "strategy": t.strategy.value,
            "stable": t.stable,
            "candidate": t.candidate,
            "steps": list(t.canary.steps),
            "ab": t.ab_test.model_dump(mode="json"),
            "shadow": t.shadow.percent if t.shadow is not None else None,
            "pin": t.pin_header,
        },
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


spec_hash = rollout_identity  # the name RolloutState.spec_hash and older callers know it by


def _record(
    state: RolloutState, decision: RolloutDecision, **changes: Any
) -> tuple[RolloutState, RolloutDecision]:
    history = (*state.history, decision)[-HISTORY_LIMIT:]
    return replace(state, history=history, **changes), decision


def start(
    md: ModelDeployment, *, now: float, previous: RolloutState | None = None
) -> tuple[RolloutState, RolloutDecision]:
    """Begin the rollout a spec describes. ``previous`` carries the stable version of an earlier rollout.

    A promoted version stays stable when the spec is edited; and when it is the spec's candidate (the spec
    still describes the rollout that promoted it), there is nothing to roll out: it keeps all traffic.
    """
    t = md.spec.traffic
    stable = t.stable or md.spec.versions[0].name
    known = {v.name for v in md.spec.versions}
    if (
        previous is not None
        and previous.stable in known
        and (previous.stable != t.candidate or previous.phase in (Phase.promoted, Phase.stable))
    ):
        stable = previous.stable
    candidate = t.candidate if t.candidate != stable else None
    base = RolloutState(
        strategy=t.strategy,
        phase=Phase.stable,
        stable=stable,
        candidate=candidate,
        weights={stable: 100},
        step_started_at=now,
        spec_hash=rollout_identity(md),
        started_at=now,
        history=previous.history if previous else (),
    )
    strategy = t.strategy
    if strategy == Strategy.canary and candidate:
        first = t.canary.steps[0]
        weights = _split(stable, candidate, first)
        reason = f"canary of {candidate} started at {first}% (steps {t.canary.steps})"
        return _record(
            base,
            RolloutDecision(Action.start, reason, now, weights),
            phase=Phase.progressing,
            weights=weights,
            step_index=0,
        )
    if strategy == Strategy.blue_green and candidate:
        reason = f"blue-green: {candidate} deployed as preview (reachable by pin), {stable} active"
        return _record(
            base, RolloutDecision(Action.start, reason, now, base.weights), phase=Phase.progressing
        )
    if strategy == Strategy.ab_test:
        weights = dict(t.ab_test.weights)
        sticky = t.ab_test.sticky
        reason = f"A/B test started with weights {weights}, sticky by {sticky.source.value} {sticky.name!r}"
        return _record(
            base, RolloutDecision(Action.start, reason, now, weights), phase=Phase.running, weights=weights
        )
    if strategy == Strategy.shadow and candidate:
        reason = f"shadowing {candidate}: mirrored traffic only, {stable} answers every caller"
        return _record(base, RolloutDecision(Action.start, reason, now, base.weights), phase=Phase.running)
    return _record(base, RolloutDecision(Action.start, f"serving {stable}", now, base.weights))


def _split(stable: str, candidate: str, percent: int) -> dict[str, int]:
    if percent >= 100:
        return {candidate: 100}
    return {stable: 100 - percent, candidate: percent}


StatsFn = Callable[[str], VersionStats]


def tick(
    state: RolloutState, md: ModelDeployment, *, stats: StatsFn, now: float
) -> tuple[RolloutState, RolloutDecision | None]:
    """Run one analysis if an interval has elapsed. ``stats(version)`` reads the window since the step
    began."""
    if state.phase != Phase.progressing or state.candidate is None:
        return state, None
    candidate_name: str = state.candidate
    spec = md.spec
    if state.strategy == Strategy.canary:
        interval, threshold, min_req = (
            spec.traffic.canary.interval_seconds,
            spec.traffic.canary.failure_threshold,
            spec.traffic.canary.min_requests,
        )
    else:
        bg = spec.traffic.blue_green
        interval, threshold, min_req = bg.analysis_interval_seconds, bg.failure_threshold, bg.min_requests
    if now - max(state.step_started_at, state.analyzed_at) < interval:
        return state, None
    drift_threshold = spec.drift.threshold if spec.drift.enabled else None
    result = analyze(
        own_inputs(stats(candidate_name), state),
        budget=spec.budget,
        min_requests=min_req,
        drift_threshold=drift_threshold,
    )
    waiting = state.last_analysis is not None and state.last_analysis.outcome == Outcome.insufficient
    state = replace(state, last_analysis=result, analyzed_at=now)
    if result.outcome == Outcome.insufficient:
        hold = RolloutDecision(Action.hold, result.reason, now, state.weights)
        if waiting and state.history and state.history[-1].action == Action.hold:
            # a run of "not enough data yet" is one history entry (the latest), not one per interval:
            # an idle rollout must not push its start and its real decisions out of the bounded history
            return replace(state, history=(*state.history[:-1], hold)), hold
        return _record(state, hold)
    if result.outcome == Outcome.failed:
        failures = state.failures + 1
        if failures >= threshold:
            return rollback(
                replace(state, failures=failures),
                now=now,
                reason=f"analysis failed {failures}x (threshold {threshold}): {result.reason}",
            )
        reason = f"analysis failed ({failures}/{threshold}): {result.reason}"
        return _record(
            state,
            RolloutDecision(Action.hold, reason, now, state.weights),
            failures=failures,
            step_started_at=now,
        )
    # passed
    if state.strategy == Strategy.blue_green:
        if not spec.traffic.blue_green.auto_promote:
            return _record(
                state,
                RolloutDecision(
                    Action.hold,
                    f"preview passed, awaiting manual promotion: {result.reason}",
                    now,
                    state.weights,
                ),
                failures=0,
                step_started_at=now,
            )
        return promote(replace(state, failures=0), now=now, reason=f"preview passed: {result.reason}")
    steps = spec.traffic.canary.steps
    if state.step_index + 1 >= len(steps):
        return promote(replace(state, failures=0), now=now, reason=f"final step passed: {result.reason}")
    nxt = state.step_index + 1
    weights = _split(state.stable, candidate_name, steps[nxt])
    return _record(
        state,
        RolloutDecision(
            Action.advance, f"step {nxt + 1}/{len(steps)} -> {steps[nxt]}%: {result.reason}", now, weights
        ),
        weights=weights,
        step_index=nxt,
        failures=0,
        step_started_at=now,
    )


def analysed_versions(state: RolloutState) -> tuple[str, ...]:
    """The versions whose behaviour this rollout's analysis judges (the candidate, while it has one)."""
    return (state.candidate,) if state.candidate is not None and state.phase != Phase.rolled_back else ()


def own_inputs(stats: VersionStats, state: RolloutState) -> VersionStats:
    """Only what this rollout produced counts: a drift result measured before the rollout started (on the
    rows of an earlier one) is no measurement for it yet."""
    at = stats.drift_measured_at
    if stats.drift_share is not None and at is not None and at < state.started_at:
        return replace(stats, drift_share=None, drift_pending=True)
    return stats


def promote(
    state: RolloutState,
    *,
    now: float,
    reason: str = "manual promotion",
    actor: str = "controller",
    version: str | None = None,
) -> tuple[RolloutState, RolloutDecision]:
    """Make the candidate (or ``version``, e.g. the winning A/B arm) take all traffic."""
    winner = version or state.candidate
    if winner is None:
        raise Conflict("nothing to promote: no candidate")
    if winner not in state.weights and winner != state.candidate:
        raise Conflict(f"cannot promote {winner!r}: not part of this rollout")
    weights = {winner: 100}
    return _record(
        state,
        RolloutDecision(Action.promote, reason, now, weights, actor),
        phase=Phase.promoted,
        weights=weights,
        previous_stable=state.stable if winner != state.stable else state.previous_stable,
        stable=winner,
        candidate=None,
        failures=0,
        step_started_at=now,
        resume_phase=None,
        step_index=-1,
    )


def rollback(
    state: RolloutState, *, now: float, reason: str = "manual rollback", actor: str = "controller"
) -> tuple[RolloutState, RolloutDecision]:
    """Return all traffic to stable. After a promotion, returns to the previous stable (instant undo)."""
    target: str
    abandoned: str | None
    if state.candidate is None and state.phase == Phase.promoted and state.previous_stable:
        target, abandoned = state.previous_stable, state.stable
    elif state.phase in (Phase.progressing, Phase.running, Phase.paused):
        target, abandoned = state.stable, state.candidate
    else:  # Stable, RolledBack, or a promotion with nothing before it
        raise Conflict(f"nothing to roll back (phase {state.phase.value})")
    weights = {target: 100}
    return _record(
        state,
        RolloutDecision(Action.rollback, reason, now, weights, actor),
        phase=Phase.rolled_back,
        weights=weights,
        stable=target,
        candidate=abandoned,
        previous_stable=None,
        step_started_at=now,
        resume_phase=None,
        step_index=-1,
    )


def pause(
    state: RolloutState, *, now: float, actor: str = "controller", reason: str = "paused"
) -> tuple[RolloutState, RolloutDecision]:
    if not state.active:
        raise Conflict(f"cannot pause: rollout is {state.phase.value}")
    return _record(
        state,
        RolloutDecision(Action.pause, reason, now, state.weights, actor),
        phase=Phase.paused,
        resume_phase=state.phase,
    )


def resume(
    state: RolloutState, *, now: float, actor: str = "controller", reason: str = "resumed"
) -> tuple[RolloutState, RolloutDecision]:
    if state.phase != Phase.paused or state.resume_phase is None:
        raise Conflict(f"cannot resume: rollout is {state.phase.value}")
    return _record(
        state,
        RolloutDecision(Action.resume, reason, now, state.weights, actor),
        phase=state.resume_phase,
        resume_phase=None,
        step_started_at=now,
    )


def reconcile_spec(
    state: RolloutState | None, md: ModelDeployment, *, now: float
) -> tuple[RolloutState, RolloutDecision | None]:
    """Resume a saved rollout of the same spec; start a new one when the spec changed (or none was saved).

    "Changed" is :func:`rollout_identity`: an edit of analysis settings keeps the rollout (and its traffic)
    as it is, and the next analysis uses the new settings."""
    if state is not None and state.spec_hash == rollout_identity(md):
        known = {v.name for v in md.spec.versions}
        if state.stable in known and (state.candidate is None or state.candidate in known):
            return state, None
    return start(md, now=now, previous=state)


def table_for(md: ModelDeployment, state: RolloutState) -> RouteTable:
    """The route table that realises a rollout state (weights, sticky arms, shadow while active)."""
    base = initial_table(md, weights=state.weights)
    strategy = state.strategy
    running = state.phase in (Phase.running, Phase.progressing, Phase.paused)
    sticky = base.sticky if strategy == Strategy.ab_test and running else None
    shadow, percent = (base.shadow, base.shadow_percent) if running and state.candidate else (None, 0.0)
    return replace(
        base,
        stable=state.stable,
        candidate=state.candidate if running else None,
        sticky=sticky,
        shadow=shadow,
        shadow_percent=percent,
    )
