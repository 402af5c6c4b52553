"""The routing policy: which version answers a request, and whether a shadow copy goes out. Pure, no I/O.

One :class:`RouteTable` describes the traffic split at an instant (weights, sticky A/B key, shadow, pin
header). :func:`decide` maps a request's routing inputs plus caller-supplied random draws to a
:class:`RouteDecision`. The same table drives the in-process gateway, the Ray Serve ingress and Gateway API
HTTPRoute weights (:func:`backend_weights`), so nothing here touches sockets, clocks or global state.

Sticky assignment hashes the key to a point in [0, 1) and gives each arm a contiguous range, in a fixed
arm order. A key therefore keeps its arm while weights stay put, and when the split between two arms
moves from 50/50 to 60/40 exactly the keys in [0.5, 0.6) change arm: the minimum possible (10 %).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from ferryman.errors import VersionNotFound
from ferryman.spec import ModelDeployment, StickyKey, StickySource, Strategy

ROUTE_STABLE = "stable"
ROUTE_CANDIDATE = "candidate"
ROUTE_PINNED = "pinned"
ROUTE_SHADOW = "shadow"


@dataclass(frozen=True, slots=True)
class RouteTable:
    model: str
    versions: tuple[str, ...]
    weights: tuple[tuple[str, int], ...]  # in a fixed order; sums to 100
    stable: str
    candidate: str | None = None
    sticky: StickyKey | None = None  # set for A/B tests
    shadow: str | None = None
    shadow_percent: float = 0.0
    pin_header: str = "x-ferryman-version"
    salt: str = ""
    _cumulative: tuple[tuple[str, float], ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        total = sum(w for _, w in self.weights)
        if total != 100:
            raise ValueError(f"weights must sum to 100, got {total}")
        for v, w in self.weights:
            if v not in self.versions:
                raise ValueError(f"weight for unknown version {v!r}")
            if w < 0:
                raise ValueError(f"negative weight for {v!r}")
        if self.shadow is not None and self.shadow not in self.versions:
            raise ValueError(f"unknown shadow version {self.shadow!r}")
        acc = 0.0
        cumulative = []
        for v, w in self.weights:
            if w > 0:
                acc += w / 100.0
                cumulative.append((v, acc))
        object.__setattr__(self, "_cumulative", tuple(cumulative))

    @property
    def weight_map(self) -> dict[str, int]:
        return dict(self.weights)

    def with_weights(self, weights: Mapping[str, int]) -> RouteTable:
        ordered = tuple((v, int(weights.get(v, 0))) for v in self.versions if v in weights)
        return replace(self, weights=ordered)

    def route_label(self, version: str) -> str:
        if self.sticky is not None:
            return version  # A/B arms are labelled by version
        if version == self.stable:
            return ROUTE_STABLE
        return ROUTE_CANDIDATE if version == self.candidate else version


@dataclass(frozen=True, slots=True)
class RouteDecision:
    version: str
    route: str
    shadow: str | None = None


@dataclass(frozen=True, slots=True)
class RoutingInputs:
    """What the policy reads from a request. Adapters fill it from HTTP; tests build it directly."""

    path_version: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    cookies: Mapping[str, str] = field(default_factory=dict)
    fields: Mapping[str, object] = field(default_factory=dict)  # named scalar inputs of the request


def hash_point(key: str, salt: str = "") -> float:
    """Map a sticky key to a uniform point in [0, 1) (stable across processes and machines)."""
    digest = hashlib.blake2b(f"{salt}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def pick_weighted(table: RouteTable, point: float) -> str:
    for version, upper in table._cumulative:
        if point < upper:
            return version
    return table._cumulative[-1][0]


def sticky_key(table: RouteTable, inputs: RoutingInputs) -> str | None:
    sticky = table.sticky
    if sticky is None:
        return None
    if sticky.source == StickySource.header:
        return inputs.headers.get(sticky.name.lower())
    if sticky.source == StickySource.cookie:
        return inputs.cookies.get(sticky.name)
    value = inputs.fields.get(sticky.name)
    return None if value is None else str(value)


def decide(
    table: RouteTable, inputs: RoutingInputs, *, draw: float, shadow_draw: float = 1.0
) -> RouteDecision:
    """Choose the version. ``draw`` and ``shadow_draw`` are uniform in [0, 1), supplied by the caller."""
    pinned = inputs.path_version or inputs.headers.get(table.pin_header)
    if pinned:
        if pinned not in table.versions:
            raise VersionNotFound(
                f"model {table.model!r} has no version {pinned!r} (versions: {list(table.versions)})"
            )
        return RouteDecision(pinned, ROUTE_PINNED)
    key = sticky_key(table, inputs)
    version = pick_weighted(table, hash_point(key, table.salt) if key is not None else draw)
    shadow = None
    if table.shadow is not None and table.shadow != version and shadow_draw * 100.0 < table.shadow_percent:
        shadow = table.shadow
    return RouteDecision(version, table.route_label(version), shadow)


def backend_weights(table: RouteTable) -> dict[str, int]:
    """Weights per version for weight-based data planes (Gateway API HTTPRoute, Ray ingress)."""
    return {v: w for v, w in table.weights}


def initial_table(md: ModelDeployment, *, weights: Mapping[str, int] | None = None) -> RouteTable:
    """The route table a spec starts with (before any rollout step), or with explicit weights."""
    spec = md.spec
    t = spec.traffic
    versions = tuple(v.name for v in spec.versions)
    stable = t.stable or versions[0]
    if weights is None:
        weights = dict(t.ab_test.weights) if t.strategy == Strategy.ab_test else {stable: 100}
    ordered = tuple((v, int(weights[v])) for v in versions if v in weights)
    sticky = t.ab_test.sticky if t.strategy == Strategy.ab_test else None
    shadow = None
    percent = 0.0
    if t.shadow is not None and t.candidate is not None:
        shadow, percent = t.candidate, t.shadow.percent
    elif t.strategy == Strategy.shadow and t.candidate is not None:
        shadow, percent = t.candidate, 100.0
    return RouteTable(
        model=md.name,
        versions=versions,
        weights=ordered,
        stable=stable,
        candidate=t.candidate,
        sticky=sticky,
        shadow=shadow,
        shadow_percent=percent,
        pin_header=t.pin_header.lower(),
        salt=md.name,
    )
