"""docs/operator-scale.md is rendered from the benchmark's results: rows, the issue's before table, and the
targets judged at the largest N."""

from __future__ import annotations

from typing import Any

from loadtests.operator_scale.measure import Result, by_verb
from loadtests.operator_scale.report import render


def result(**changes: Any) -> dict[str, Any]:
    r = Result(
        n=1000,
        label="after",
        apply_seconds=9.0,
        phase_seconds=20.0,
        deployments_ready_seconds=60.0,
        reflected_seconds=62.5,
        rss_mb=150.0,
        rss_idle_mb=151.0,
        cpu_to_ready=40.0,
        idle_seconds=60.0,
        idle_cpu_cores=0.03,
        idle_writes=0,
        idle_gets=0,
        idle_lists=0,
        idle_operator_requests=12,
        idle_lease_renewals=12,
        idle_reconciles_per_s=33.0,
    ).to_dict()
    return {**r, **changes}


def test_targets_met_and_missed() -> None:
    text = render([result(n=10), result()], nodes=32, namespaces=10, idle=60, settle=35, machine="2 cores")
    assert (
        "| 1,000 | after | 9 s | 20 s | 60 s → 62.5 s | 150 MB | 40 s | 0 | 0 | 0 | 12 | 12 | 33 | 0.030 |"
        in text
    )
    assert "## Targets (N = 1,000, this run)" in text and "**missed**" not in text
    assert "| 1,000 | 147 s | 584 → 749 s |" in text  # the before table
    slow = render(
        [result(phase_seconds=45.0, idle_writes=3)],
        nodes=32,
        namespaces=10,
        idle=60,
        settle=35,
        machine="2 cores",
    )
    assert slow.count("**missed**") == 3  # phase from the first create and from the last, idle writes


def test_requests_by_verb_keep_the_operators_kinds() -> None:
    delta: dict[tuple[tuple[str, str], ...], float] = {
        (("resource", "deployments"), ("subresource", ""), ("verb", "APPLY")): 3.0,
        (("resource", "modeldeployments"), ("subresource", "status"), ("verb", "PUT")): 2.0,
        (("resource", "pods"), ("subresource", ""), ("verb", "PATCH")): 9.0,
    }
    assert by_verb(delta) == {"deployments APPLY": 3, "modeldeployments/status PUT": 2}
