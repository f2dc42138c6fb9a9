"""The Prometheus rules load (`promtool check rules`), their unit tests pass (`promtool test rules`),
every alert has a test in which it fires, and every alert's runbook link leads to a section of the
operations guide."""

from __future__ import annotations

import re
import subprocess

import yaml
from deploy_files import PROMETHEUS, ROOT, RULE_FILES, RULE_TESTS, alert_rules, metric_names, resolve, tool

PROMTOOL_HINT = "Debian's prometheus package; .ci/run installs it when missing"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("promtool", PROMTOOL_HINT), *args], capture_output=True, text=True, timeout=120,
                          cwd=PROMETHEUS)


def test_rules_load() -> None:
    assert RULE_FILES, "no rule files"
    done = _promtool("check", "rules", *(str(p) for p in RULE_FILES))
    assert done.returncode == 0, done.stdout + done.stderr


def test_rule_unit_tests_pass() -> None:
    assert RULE_TESTS, "no rule tests"
    done = _promtool("test", "rules", *(str(p) for p in RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(RULE_TESTS), done.stdout


def test_every_rule_file_is_tested_and_every_alert_fires_in_a_test() -> None:
    tested_files: set[str] = set()
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        spec = yaml.safe_load(path.read_text())
        tested_files |= {(path.parent / f).resolve().name for f in spec["rule_files"]}
        for case in spec["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert tested_files == {p.name for p in RULE_FILES}
    alerts = set(alert_rules())
    assert alerts - fired == set(), "alerts without a test in which they fire"
    assert alerts - quiet == set(), "alerts without a test in which they stay quiet"
    assert (fired | quiet) <= alerts, "tests of alerts that do not exist"


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


def test_every_alert_links_to_its_section_of_the_operations_guide() -> None:
    guide = (ROOT / "docs" / "operations.md").read_text()
    anchors = _anchors(guide)
    for name, rule in alert_rules().items():
        runbook = rule["annotations"]["runbook"]
        page, _, anchor = runbook.partition("#")
        assert page == "docs/operations.md", name
        assert anchor == name.lower() and anchor in anchors, f"{name}: no section '{anchor}' in docs/operations.md"


def test_metric_names_are_read_from_promql_as_prometheus_would() -> None:
    """Guards the name extraction the metric-name test relies on."""
    expr = ('histogram_quantile(0.95, sum by (route, le) (rate(ponyserve_a_bucket{status=~"5..", x="y(z)"}[5m])))'
            ' / on(license) group_left(level) max without (instance) (ponyserve_b) > bool 0.5'
            ' unless on() (count(rec:ponyserve_c:rate5m offset 5m) > 1e3) and vector(0)'
            ' or label_replace(ponyserve_d, "dst", "$1", "src", "(.*)") + ponyserve_e[$__rate_interval]')
    names = metric_names(expr)
    assert names == {"ponyserve_a_bucket", "ponyserve_b", "rec:ponyserve_c:rate5m", "ponyserve_d", "ponyserve_e"}
    assert resolve(names, {"rec:ponyserve_c:rate5m": "sum(rate(ponyserve_f_total[5m]))"}) == {
        "ponyserve_a_bucket", "ponyserve_b", "ponyserve_f_total", "ponyserve_d", "ponyserve_e"}
