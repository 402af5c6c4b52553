"""The gateway's prediction log: its own ids in a ring, caller-chosen ids in a bounded dict."""

from __future__ import annotations

import numpy as np
import pytest

from ferryman_runtimes.gateway.predictions import PredictionLog


def test_own_ids_round_trip_and_expire_after_capacity() -> None:
    log = PredictionLog(3)
    ids = []
    for i in range(5):
        seq, rid = log.new_id()
        log.record(seq, rid, ("v1", "stable", np.array([i])))
        ids.append(rid)
    assert len(set(ids)) == 5 and all(r.startswith(log.prefix) for r in ids)
    assert log.get(ids[0]) is None and log.get(ids[1]) is None  # overwritten by newer answers
    got = log.get(ids[4])
    assert got is not None
    version, route, labels = got
    assert labels is not None
    assert (version, route, int(labels.flat[0])) == ("v1", "stable", 4)
    log.forget(ids[4])
    assert log.get(ids[4]) is None and log.get(ids[3]) is not None
    assert len(log) == 2


def test_caller_ids_are_bounded_and_oldest_go_first() -> None:
    log = PredictionLog(2)
    for rid in ("a", "b", "c"):
        log.record(0, rid, ("v2", "candidate", None))
    assert log.get("a") is None and log.get("b") == ("v2", "candidate", None)
    log.forget("b")
    assert log.get("b") is None and log.get("c") is not None


@pytest.mark.parametrize("suffix", ["", "zz", "0", "-1", "ffffffffff"])
def test_lookalike_ids_are_unknown_not_errors(suffix: str) -> None:
    log = PredictionLog(4)
    seq, rid = log.new_id()
    log.record(seq, rid, ("v1", "stable", None))
    assert log.get(log.prefix + suffix) is None
    log.forget(log.prefix + suffix)  # no error, nothing dropped
    assert log.get(rid) is not None


def test_ids_differ_between_logs() -> None:
    assert PredictionLog(1).new_id()[1] != PredictionLog(1).new_id()[1]


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        PredictionLog(0)
