"""Where the deployment files live, and the queries they make, for the tests in this folder."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUSTOMIZE = DEPLOY / "kubernetes"
OVERLAYS = ("production", "dev")
PROMETHEUS = DEPLOY / "prometheus"
RULE_FILES = sorted(PROMETHEUS.glob("*.rules.yml"))
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.test.yml"))
DASHBOARD = DEPLOY / "grafana" / "ponyserve.json"


def tool(name: str, installed_by: str) -> str:
    """The tool's path; a missing one fails the test (it is part of the proof, not optional)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed ({installed_by})")
    return path


def kustomize(directory: Path) -> list[dict[str, Any]]:
    kubectl = tool("kubectl", ".ci/run installs it when missing")
    done = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def rule_groups() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            yield path, group


def recording_rules() -> dict[str, str]:
    return {rule["record"]: rule["expr"] for _, group in rule_groups() for rule in group["rules"] if "record" in rule}


def alert_rules() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for _, group in rule_groups() for rule in group["rules"] if "alert" in rule}


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def keda_queries() -> list[str]:
    return [trigger["metadata"]["query"] for doc in kustomize(KUSTOMIZE / "overlays" / "production")
            if doc["kind"] == "ScaledObject" for trigger in doc["spec"]["triggers"] if trigger["type"] == "prometheus"]


# -- metric names in PromQL -------------------------------------------------------------------

_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
                       "unless", "offset", "inf", "nan", "Inf", "NaN"})
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![A-Za-z0-9_:.$])[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (functions, keywords and label names left out).

    Enough for the expressions this project writes: strings, label matchers, ranges and
    grouping clauses are removed first, then every identifier not called like a function is a name."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables ($__rate_interval, ${datasource})
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        word = match.group(0)
        if word in _KEYWORDS or text[match.end():].lstrip().startswith("("):
            continue
        names.add(word)
    return names


def resolve(names: set[str], recorded: dict[str, str]) -> set[str]:
    """Recording-rule names replaced, recursively, by the series their expressions read."""
    out: set[str] = set()
    pending = list(names)
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in recorded:
            pending.extend(metric_names(recorded[name]))
        else:
            out.add(name)
    return out


def queried_metric_names() -> set[str]:
    """Every series the dashboard, the alert and recording rules and the KEDA trigger read."""
    recorded = recording_rules()
    exprs = [*dashboard_queries(), *(rule["expr"] for rule in alert_rules().values()), *recorded.values(),
             *keda_queries()]
    return resolve({name for expr in exprs for name in metric_names(expr)}, recorded)
