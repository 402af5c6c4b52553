"""The pure routing policy: weighted draws, sticky arms with minimal movement, pins, shadow percent."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from ferryman.errors import VersionNotFound
from ferryman.routing import (
    ROUTE_CANDIDATE,
    ROUTE_PINNED,
    ROUTE_STABLE,
    RouteTable,
    RoutingInputs,
    backend_weights,
    decide,
    hash_point,
    initial_table,
    pick_weighted,
)
from ferryman.spec import StickyKey, StickySource, parse_deployment

VERSIONS = ("v1", "v2", "v3")


def table(weights: dict[str, int], **kwargs: Any) -> RouteTable:
    options: dict[str, Any] = {
        "model": "m",
        "versions": VERSIONS,
        "stable": "v1",
        "candidate": "v2",
        "salt": "m",
    }
    options.update(kwargs)
    return RouteTable(weights=tuple(weights.items()), **options)


def md(traffic: dict[str, Any]) -> Any:
    return parse_deployment(
        {
            "apiVersion": "serving.ferryman.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "m"},
            "spec": {
                "versions": [{"name": v, "uri": f"/models/{v}.onnx"} for v in VERSIONS],
                "traffic": traffic,
            },
        }
    )


NO_INPUTS = RoutingInputs()


# -- the table ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("weights", "kwargs", "message"),
    [
        ({"v1": 60, "v2": 30}, {}, "sum to 100"),
        ({"v1": 50, "v9": 50}, {}, "unknown version 'v9'"),
        ({"v1": 110, "v2": -10}, {}, "negative weight"),
        ({"v1": 100}, {"shadow": "v9"}, "unknown shadow"),
    ],
)
def test_invalid_tables_are_refused(weights: dict[str, int], kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        table(weights, **kwargs)


def test_with_weights_and_backend_weights_keep_the_version_order() -> None:
    t = table({"v1": 100}).with_weights({"v2": 40, "v1": 60})
    assert t.weights == (("v1", 60), ("v2", 40))
    assert backend_weights(t) == {"v1": 60, "v2": 40}
    assert t.weight_map == {"v1": 60, "v2": 40}


# -- weighted draws -------------------------------------------------------------------------------------
def test_draw_boundaries_are_exact() -> None:
    t = table({"v1": 70, "v2": 30})
    assert decide(t, NO_INPUTS, draw=0.0).version == "v1"
    assert decide(t, NO_INPUTS, draw=0.6999999).version == "v1"
    assert decide(t, NO_INPUTS, draw=0.7).version == "v2"
    assert decide(t, NO_INPUTS, draw=0.9999999).version == "v2"


def test_seeded_draws_follow_the_weights() -> None:
    t = table({"v1": 70, "v2": 25, "v3": 5})
    rng = random.Random(1234)
    n = 200_000
    seen = Counter(decide(t, NO_INPUTS, draw=rng.random()).version for _ in range(n))
    for version, weight in t.weights:
        assert abs(100 * seen[version] / n - weight) < 0.5, seen


def test_a_zero_weight_version_is_never_chosen() -> None:
    t = table({"v1": 0, "v2": 100})
    assert {decide(t, NO_INPUTS, draw=d / 100).version for d in range(100)} == {"v2"}
    assert pick_weighted(t, 0.0) == "v2"


def test_route_labels_name_stable_and_candidate() -> None:
    t = table({"v1": 50, "v2": 50})
    assert decide(t, NO_INPUTS, draw=0.1).route == ROUTE_STABLE
    assert decide(t, NO_INPUTS, draw=0.9).route == ROUTE_CANDIDATE


# -- sticky arms ----------------------------------------------------------------------------------------
def ab(
    weights: dict[str, int], source: StickySource = StickySource.header, name: str = "X-User-Id"
) -> RouteTable:
    return table(weights, sticky=StickyKey(source=source, name=name), candidate=None)


def test_hash_points_are_stable_uniform_and_salted() -> None:
    points = [hash_point(f"user-{i}", "m") for i in range(50_000)]
    assert all(0.0 <= p < 1.0 for p in points)
    assert points[:100] == [hash_point(f"user-{i}", "m") for i in range(100)]  # no process-local state
    assert hash_point("user-1", "m") != hash_point("user-1", "other-model")
    deciles = Counter(int(p * 10) for p in points)
    assert all(abs(c - 5_000) < 400 for c in deciles.values()), deciles


@pytest.mark.parametrize(
    ("source", "inputs"),
    [
        (StickySource.header, lambda k: RoutingInputs(headers={"x-user-id": k})),
        (StickySource.cookie, lambda k: RoutingInputs(cookies={"X-User-Id": k})),
        (StickySource.field, lambda k: RoutingInputs(fields={"X-User-Id": k})),
    ],
)
def test_a_key_keeps_its_arm_whatever_the_draw(source: StickySource, inputs: Any) -> None:
    t = ab({"v1": 50, "v2": 50}, source)
    rng = random.Random(5)
    for i in range(500):
        key = f"user-{i}"
        arms = {decide(t, inputs(key), draw=rng.random()).version for _ in range(5)}
        assert len(arms) == 1
        assert arms == {"v1" if hash_point(key, "m") < 0.5 else "v2"}
        assert decide(t, inputs(key), draw=0.5).route == arms.pop()  # A/B routes are labelled by arm


def test_integer_field_keys_hash_like_their_text() -> None:
    t = ab({"v1": 50, "v2": 50}, StickySource.field, "user_id")
    for i in range(100):
        assert (
            decide(t, RoutingInputs(fields={"user_id": i}), draw=0.0).version
            == decide(t, RoutingInputs(fields={"user_id": str(i)}), draw=0.0).version
        )


def test_requests_without_a_key_fall_back_to_the_draw() -> None:
    t = ab({"v1": 50, "v2": 50})
    assert decide(t, NO_INPUTS, draw=0.1).version == "v1"
    assert decide(t, NO_INPUTS, draw=0.9).version == "v2"
    assert decide(t, RoutingInputs(headers={"x-other": "k"}), draw=0.9).version == "v2"


def test_50_50_to_60_40_moves_exactly_the_keys_in_between_and_only_towards_v1() -> None:
    before, after = ab({"v1": 50, "v2": 50}), ab({"v1": 60, "v2": 40})
    keys = [f"user-{i}" for i in range(20_000)]

    def arm(t: RouteTable, k: str) -> str:
        return decide(t, RoutingInputs(headers={"x-user-id": k}), draw=0.0).version

    moved = [k for k in keys if arm(before, k) != arm(after, k)]
    assert {(arm(before, k), arm(after, k)) for k in moved} == {("v2", "v1")}
    assert set(moved) == {k for k in keys if 0.5 <= hash_point(k, "m") < 0.6}
    assert abs(len(moved) / len(keys) - 0.10) < 0.01


def test_unchanged_weights_move_nobody_and_a_growing_arm_only_gains() -> None:
    keys = [f"k{i}" for i in range(5_000)]
    steps = [{"v1": 90, "v2": 10}, {"v1": 75, "v2": 25}, {"v1": 50, "v2": 50}, {"v1": 0, "v2": 100}]
    previous = None
    for weights in steps:
        t = ab(weights)
        arms = {k: decide(t, RoutingInputs(headers={"x-user-id": k}), draw=0.0).version for k in keys}
        assert arms == {
            k: decide(ab(dict(weights)), RoutingInputs(headers={"x-user-id": k}), draw=0.9).version
            for k in keys
        }
        if previous is not None:  # as v2 grows, a key once on v2 stays on v2
            assert all(arms[k] == "v2" for k in keys if previous[k] == "v2")
        previous = arms


# -- pins -----------------------------------------------------------------------------------------------
def test_pins_by_path_or_header_bypass_weights_sticky_and_shadow() -> None:
    t = table({"v1": 100}, shadow="v2", shadow_percent=100.0, sticky=StickyKey(name="x-user-id"))
    by_path = decide(
        t, RoutingInputs(path_version="v3", headers={"x-user-id": "k"}), draw=0.0, shadow_draw=0.0
    )
    assert (by_path.version, by_path.route, by_path.shadow) == ("v3", ROUTE_PINNED, None)
    by_header = decide(t, RoutingInputs(headers={"x-ferryman-version": "v2"}), draw=0.0, shadow_draw=0.0)
    assert (by_header.version, by_header.route) == ("v2", ROUTE_PINNED)
    both = decide(t, RoutingInputs(path_version="v1", headers={"x-ferryman-version": "v2"}), draw=0.0)
    assert both.version == "v1"  # the path wins


def test_a_custom_pin_header() -> None:
    t = table({"v1": 100}, pin_header="x-model-version")
    assert decide(t, RoutingInputs(headers={"x-model-version": "v3"}), draw=0.0).version == "v3"
    assert decide(t, RoutingInputs(headers={"x-ferryman-version": "v3"}), draw=0.0).version == "v1"


@pytest.mark.parametrize(
    "inputs", [RoutingInputs(path_version="v9"), RoutingInputs(headers={"x-ferryman-version": "v9"})]
)
def test_an_unknown_pin_is_a_404(inputs: RoutingInputs) -> None:
    with pytest.raises(VersionNotFound, match="'v9'") as err:
        decide(table({"v1": 100}), inputs, draw=0.0)
    assert err.value.status == 404


# -- shadow ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("percent", [0.0, 12.5, 50.0, 100.0])
def test_shadow_percent_of_seeded_draws(percent: float) -> None:
    t = table({"v1": 100}, shadow="v2", shadow_percent=percent)
    rng = random.Random(99)
    n = 100_000
    decisions = [decide(t, NO_INPUTS, draw=rng.random(), shadow_draw=rng.random()) for _ in range(n)]
    assert {d.version for d in decisions} == {"v1"}  # the caller is always answered by the live split
    mirrored = sum(d.shadow == "v2" for d in decisions)
    assert abs(100 * mirrored / n - percent) < 0.5
    if percent == 100.0:
        assert mirrored == n
    if percent == 0.0:
        assert mirrored == 0


def test_no_shadow_copy_to_the_version_that_already_answers() -> None:
    t = table({"v1": 50, "v2": 50}, shadow="v2", shadow_percent=100.0)
    assert decide(t, NO_INPUTS, draw=0.9, shadow_draw=0.0).shadow is None
    assert decide(t, NO_INPUTS, draw=0.1, shadow_draw=0.0).shadow == "v2"


def test_the_default_shadow_draw_sends_no_copy() -> None:
    t = table({"v1": 100}, shadow="v2", shadow_percent=99.0)
    assert decide(t, NO_INPUTS, draw=0.5).shadow is None


# -- tables from specs ----------------------------------------------------------------------------------
def test_initial_tables_per_strategy() -> None:
    canary = initial_table(md({"strategy": "canary", "stable": "v1", "candidate": "v2"}))
    assert canary.weights == (("v1", 100),) and canary.sticky is None and canary.shadow is None
    assert canary.salt == "m" and canary.candidate == "v2"

    abt = initial_table(
        md(
            {
                "strategy": "abTest",
                "abTest": {"weights": {"v3": 20, "v1": 80}, "sticky": {"source": "cookie", "name": "uid"}},
            }
        )
    )
    assert abt.weights == (("v1", 80), ("v3", 20))  # spec version order, whatever the mapping order
    assert abt.sticky == StickyKey(source=StickySource.cookie, name="uid")

    shadow = initial_table(md({"strategy": "shadow", "stable": "v1", "candidate": "v3"}))
    assert (shadow.shadow, shadow.shadow_percent, shadow.weights) == ("v3", 100.0, (("v1", 100),))
    partial = initial_table(md({"strategy": "shadow", "candidate": "v3", "shadow": {"percent": 10}}))
    assert (partial.shadow, partial.shadow_percent) == ("v3", 10.0)

    pinned = initial_table(md({"pinHeader": "X-Model-Version"}))
    assert pinned.pin_header == "x-model-version" and pinned.stable == "v1"

    explicit = initial_table(md({"strategy": "canary", "candidate": "v2"}), weights={"v1": 75, "v2": 25})
    assert explicit.weights == (("v1", 75), ("v2", 25))
