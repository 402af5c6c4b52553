"""promtool accepts the generated rules, and its unit tests see every alert both firing and not firing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ferryman import alerts
from tests.helpers.prometheus import promtool_binary

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "monitoring" / "alerts"
TESTS = ALERTS / "tests"

pytestmark = pytest.mark.skipif(
    promtool_binary() is None, reason="promtool not installed (scripts/system-deps.sh)"
)


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool_binary()), *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def test_check_rules_passes_for_the_committed_and_the_prometheusrule_form(tmp_path: Path) -> None:
    done = promtool("check", "rules", ALERTS / alerts.RULES_FILE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
    groups = tmp_path / "from-prometheusrule.yaml"
    groups.write_text(yaml.safe_dump(alerts.prometheus_rule()["spec"]))
    done = promtool("check", "rules", groups)
    assert done.returncode == 0, done.stdout + done.stderr


def test_check_rules_rejects_a_broken_rule(tmp_path: Path) -> None:
    doc = alerts.rules()
    doc["groups"][1]["rules"][0]["expr"] = "sum by (model) (rate(ferryman_requests_total[5m]"
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(doc))
    assert promtool("check", "rules", broken).returncode != 0


def test_unit_tests_cover_each_alert_firing_and_not_firing() -> None:
    tests = sorted(TESTS.glob("*.yaml"))
    assert tests
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in tests:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {r["alert"] for g in alerts.rules()["groups"] for r in g["rules"] if "alert" in r}
    assert fired == names, f"alerts never shown firing: {names - fired}"
    assert quiet == names, f"alerts never shown quiet: {names - quiet}"
    done = promtool("test", "rules", *tests)
    assert done.returncode == 0, done.stdout + done.stderr


def test_unit_tests_fail_when_a_threshold_changes(tmp_path: Path) -> None:
    """The promtool tests really exercise the thresholds: a looser SLO breaks them."""
    tests = tmp_path / "tests"
    tests.mkdir()
    for path in TESTS.glob("*.yaml"):
        shutil.copy(path, tests / path.name)
    (tmp_path / alerts.RULES_FILE).write_text(alerts.rules_yaml(alerts.SloConfig(max_error_ratio=0.2)))
    done = promtool("test", "rules", *sorted(tests.glob("*.yaml")))
    assert done.returncode != 0
    assert "FerrymanHighErrorRate" in done.stdout + done.stderr
