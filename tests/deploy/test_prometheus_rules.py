"""Alert and recording rules: promtool accepts them and its unit tests pass.

The unit tests (deploy/prometheus/tests/) show the fast-burn freshness alert firing when the
embedder stops and staying silent on a healthy series, among others.
"""

from __future__ import annotations

import subprocess

import yaml

from tests.deploy.conftest import ROOT

RULES = ROOT / "deploy/prometheus/rules/vitrine.yml"
UNIT_TESTS = sorted((ROOT / "deploy/prometheus/tests").glob("*.yml"))


def _promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT
    )


def test_rules_pass_promtool_check(promtool: str) -> None:
    result = _promtool(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rule_unit_tests_pass(promtool: str) -> None:
    assert UNIT_TESTS, "no promtool unit tests found"
    result = _promtool(promtool, "test", "rules", *map(str, UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_required_alerts_exist_and_are_tested() -> None:
    alerts = {
        rule["alert"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    required = {
        "VitrineFreshnessFastBurn",
        "VitrineFreshnessSlowBurn",
        "VitrineEmbedderDown",
        "VitrineDeadLetterRateHigh",
        "VitrineConsumerLagGrowing",
        "VitrineRecallErrorRatioHigh",
        "VitrineRolloutStalled",
        "VitrineRolloutJobGone",
        "VitrineRolloutCoversFailing",
        "VitrineStreamSwitchRefused",
    }
    assert required <= alerts
    tested = {
        case["alertname"]
        for path in UNIT_TESTS
        for group in yaml.safe_load(path.read_text())["tests"]
        for case in group.get("alert_rule_test", [])
    }
    assert required <= tested


def test_a_broken_rule_is_caught(promtool: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # The check above must be able to fail: feed promtool a rule with a syntax error.
    broken = tmp_path / "broken.yml"
    broken.write_text("groups:\n- name: x\n  rules:\n  - alert: X\n    expr: sum(rate(\n")
    assert _promtool(promtool, "check", "rules", str(broken)).returncode != 0
