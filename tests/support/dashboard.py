"""The metric names the Grafana dashboard of docker/monitoring queries (parsed from its PromQL)."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docker" / "monitoring" / "grafana" / "dashboards" / "ktrdr-fleet.json"
#: A metric name in a PromQL expression (ktrdr's all start with ktrdr_).
_NAME = re.compile(r"\bktrdr_[a-zA-Z0-9_]*")


def dashboard_exprs(path: Path = DASHBOARD) -> list[str]:
    """Every query expression of every panel."""
    dashboard = json.loads(path.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def queried_names(path: Path = DASHBOARD) -> set[str]:
    """Every ktrdr metric (sample) name the dashboard's queries use."""
    return {name for expr in dashboard_exprs(path) for name in _NAME.findall(expr)}


__all__ = ["DASHBOARD", "dashboard_exprs", "queried_names"]
