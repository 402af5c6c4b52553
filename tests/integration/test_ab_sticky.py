"""Sticky A/B over real HTTP: a key keeps its arm; a weight change moves only the keys that must move."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ferryman.routing import hash_point
from tests.helpers.gateway import MODEL, actions, arms_for, ferryman_up, wait_until, write_spec


def _ab(versions: dict[str, Path], *, v1: int, source: str, name: str) -> dict[str, Any]:
    return {
        "versions": versions,
        "traffic": {
            "strategy": "abTest",
            "stable": "v1",
            "abTest": {"weights": {"v1": v1, "v2": 100 - v1}, "sticky": {"source": source, "name": name}},
        },
    }


def _share(arms: dict[str, str], version: str) -> float:
    return Counter(arms.values())[version] / len(arms)


def test_header_key_keeps_its_arm_and_50_50_to_60_40_moves_only_the_necessary_keys(
    sample_models, traffic: np.ndarray, tmp_path: Path
) -> None:
    keys = [f"user-{i}" for i in range(800)]
    spec = write_spec(
        tmp_path / "deployment.yaml", **_ab(sample_models.versions, v1=50, source="header", name="x-user-id")
    )

    def header(key: str) -> dict[str, Any]:
        return {"headers": {"x-user-id": key}}

    with ferryman_up(spec, tmp_path / "state") as up:
        rollout = up.rollout()
        assert rollout["phase"] == "Running" and rollout["weights"] == {"v1": 50, "v2": 50}
        first = arms_for(up.url, keys, traffic, header)
        again = arms_for(
            up.url, keys[::-1], traffic[::-1], header
        )  # other order, other rows, other connections
        assert again == first
        assert 0.45 <= _share(first, "v1") <= 0.55

        # edit the spec file: the controller notices and re-splits 60/40
        write_spec(spec, **_ab(sample_models.versions, v1=60, source="header", name="x-user-id"))
        wait_until(
            lambda: up.rollout()["weights"] == {"v1": 60, "v2": 40}, timeout=30, what="the 60/40 split"
        )
        assert actions(up.rollout()).count("start") == 2
        after = arms_for(up.url, keys, traffic, header)
        assert arms_for(up.url, keys[:200], traffic, header) == {k: after[k] for k in keys[:200]}

    moved = {k for k in keys if after[k] != first[k]}
    # only v2 -> v1, and about the 10 % that the new split requires
    assert {(first[k], after[k]) for k in moved} == {("v2", "v1")}
    assert 0.06 <= len(moved) / len(keys) <= 0.14, len(moved)
    # exactly the keys whose hash point lies in [0.5, 0.6): nobody else changed arm
    must_move = {k for k in keys if 0.5 <= hash_point(k, MODEL) < 0.6}
    assert moved == must_move
    assert 0.55 <= _share(after, "v1") <= 0.65


def test_cookie_and_input_field_keys_are_sticky_and_reload_switches_the_key(
    sample_models, traffic: np.ndarray, tmp_path: Path
) -> None:
    keys = [f"visitor-{i}" for i in range(600)]
    spec = write_spec(
        tmp_path / "deployment.yaml", **_ab(sample_models.versions, v1=50, source="cookie", name="ab_user")
    )

    def cookie(key: str) -> dict[str, Any]:
        return {"cookies": {"theme": "dark", "ab_user": key}}

    def field(key: str) -> dict[str, Any]:
        return {"extra": {"user_id": key}}  # an input the model does not have: stripped before inference

    with ferryman_up(spec, tmp_path / "state") as up:
        by_cookie = arms_for(up.url, keys, traffic, cookie)
        assert arms_for(up.url, keys[::-1], traffic, cookie) == by_cookie
        assert 0.42 <= _share(by_cookie, "v1") <= 0.58

        write_spec(spec, **_ab(sample_models.versions, v1=50, source="field", name="user_id"))
        # when /reload returns the edited spec is in effect (the file watch may have adopted it first)
        latest = up.action("reload")["status"]["rollout"]["history"][-1]
        assert latest["action"] == "start" and "field 'user_id'" in latest["reason"]

        by_field = arms_for(up.url, keys, traffic, field)
        assert arms_for(up.url, keys[::-1], traffic[::-1], field) == by_field
        # the assignment is a function of the key alone, wherever it travels
        assert by_field == by_cookie
        status = up.status()
    errors = sum(r["errors"] for r in status["traffic"])
    assert errors == 0
