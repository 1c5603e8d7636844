"""The Grafana dashboard is valid dashboard JSON, provisioned where docker-compose mounts it,
and every panel query is valid PromQL (promtool parses them as recording rules)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from tests.deploy.conftest import ROOT

DASHBOARD = ROOT / "deploy/grafana/dashboards/vitrine.json"
PROVISIONING = ROOT / "deploy/grafana/provisioning"


def _dashboard() -> dict:  # type: ignore[type-arg]
    loaded: dict = json.loads(DASHBOARD.read_text())  # type: ignore[type-arg]
    return loaded


def test_dashboard_structure() -> None:
    dash = _dashboard()
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    ids = [panel["id"] for panel in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dash["panels"]:
        assert panel["type"] in {"timeseries", "stat", "heatmap", "gauge", "table"}
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["refId"]
    titles = " ".join(panel["title"].lower() for panel in dash["panels"])
    for topic in ("freshness", "outcome", "stage", "mismatch", "lag", "recall"):
        assert topic in titles, f"no panel about {topic}"


def test_dashboard_is_provisioned_with_its_datasource() -> None:
    datasources = yaml.safe_load((PROVISIONING / "datasources/prometheus.yml").read_text())
    uids = {source["uid"] for source in datasources["datasources"]}
    for panel in _dashboard()["panels"]:
        assert panel["datasource"]["uid"] in uids
    providers = yaml.safe_load((PROVISIONING / "dashboards/vitrine.yml").read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = {
        volume.split(":")[1]: volume.split(":")[0]
        for volume in compose["services"]["grafana"]["volumes"]
    }
    path = providers["providers"][0]["options"]["path"]
    assert (ROOT / mounts[path] / DASHBOARD.name).resolve() == DASHBOARD.resolve()


def test_every_query_is_valid_promql(promtool: str, tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:query_{n}", "expr": target["expr"].replace("$__rate_interval", "5m")}
        for n, target in enumerate(t for panel in _dashboard()["panels"] for t in panel["targets"])
    ]
    rule_file = tmp_path / "dashboard-queries.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(rule_file)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
