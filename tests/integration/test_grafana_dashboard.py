"""contrib/grafana/tlsfwd-dashboard.json, the ready Grafana dashboard: valid
JSON that imports cleanly (the ${DS_PROMETHEUS} input on every query, the
`service` variable, unique panel ids, a layout within 24 columns), and no
drift from what tlsfwd exports: every metric name in a panel's or a
variable's expression is one of README's "Metrics" table and one a real
scrape of tlsfwd has, every label it groups or filters by is one of those
metrics' (or a target label Prometheus adds), and every metric of README's
table is on the dashboard unless listed in NOT_ON_DASHBOARD. Every expression
also parses (`promtool check rules`; Debian package prometheus, which
`make deps` installs: without it the test fails)."""

import json
import os
import re
import subprocess

import pytest

from harness.clients import exchange_ok
from harness.prometheus import need
from harness.scrape import http_get
from harness.upstreams import echo_handler

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DASHBOARD = os.path.join(REPO, "contrib", "grafana", "tlsfwd-dashboard.json")
README = os.path.join(REPO, "README.md")

# Metrics of README's table deliberately not on the dashboard (none yet).
NOT_ON_DASHBOARD = set()
# Labels Prometheus adds to every series of a target, and the histograms' le.
TARGET_LABELS = {"instance", "job"}

PROMQL_FUNCTIONS = {
    "abs", "absent", "absent_over_time", "avg_over_time", "ceil", "changes", "clamp",
    "clamp_max", "clamp_min", "count_over_time", "day_of_month", "day_of_week", "delta",
    "deriv", "exp", "floor", "histogram_quantile", "holt_winters", "hour", "idelta",
    "increase", "irate", "label_join", "label_replace", "label_values", "last_over_time",
    "ln", "log2", "log10", "max_over_time", "min_over_time", "minute", "month",
    "predict_linear", "quantile_over_time", "rate", "resets", "round", "scalar", "sort",
    "sort_desc", "sqrt", "stddev_over_time", "sum_over_time", "time", "timestamp", "vector",
    # aggregations
    "avg", "bottomk", "count", "count_values", "group", "max", "min", "quantile", "stddev",
    "stdvar", "sum", "topk",
}
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on",
                   "ignoring", "group_left", "group_right", "inf", "nan"}
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
MATCHERS = re.compile(r"\{([^}]*)\}")


def load():
    with open(DASHBOARD) as f:
        return json.load(f)


def all_panels(dash):
    """Every panel, those inside collapsed rows too."""
    for p in dash["panels"]:
        yield p
        yield from p.get("panels", [])


def expressions(dash):
    """(where, PromQL) of every panel target and every query variable."""
    for p in all_panels(dash):
        for t in p.get("targets", []):
            yield "panel %d %r %s" % (p["id"], p["title"], t["refId"]), t["expr"]
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            yield "variable %s" % v["name"], q


def strip_variables(expr):
    """Grafana's $vars and ${vars} as Prometheus would get them."""
    expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def metric_names(expr):
    """The metric names of a PromQL expression: every identifier that is not a
    function, keyword, label (matchers, grouping) or Grafana variable."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"^\s*label_values\((.*),\s*\w+\s*\)\s*$", r"\1", e)  # its label
    e = MATCHERS.sub("", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = GROUPING.sub("", e)
    e = re.sub(r"\$\{?\w+\}?", "", e)
    names = set()
    for m in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", e):
        word = m.group(0)
        if e[m.end():].lstrip().startswith("("):
            assert word in PROMQL_FUNCTIONS, "%r: unknown function %s" % (expr, word)
        elif word not in PROMQL_KEYWORDS:
            names.add(word)
    return names


def label_names(expr):
    """Labels an expression filters or groups by (label_values' second argument too)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    labels = set()
    for m in MATCHERS.finditer(e):
        labels |= set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", m.group(1)))
    for m in GROUPING.finditer(e):
        labels |= {x.strip() for x in m.group(2).split(",") if x.strip()}
    m = re.match(r"\s*label_values\(.*,\s*(\w+)\s*\)\s*$", e)
    if m:
        labels.add(m.group(1))
    return labels


def readme_metrics():
    """({sample name: labels}, {sample name: family}) from README's "Metrics"
    table; a histogram's family gives its _bucket (with le), _sum and _count."""
    with open(README) as f:
        text = f.read()
    section = text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    out, family = {}, {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        labels = set(re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", cells[1])))
        for name in re.findall(r"`(\w+)`", cells[0]):
            if "histogram" in cells[2]:
                out[name + "_bucket"] = labels | {"le"}
                out[name + "_sum"] = out[name + "_count"] = set(labels)
                for part in ("_bucket", "_sum", "_count"):
                    family[name + part] = name
            else:
                out[name] = set(labels)
                family[name] = name
    return out, family


def test_the_helpers_read_promql_as_meant():
    expr = ('histogram_quantile(0.99, sum by (le) (rate(tlsfwd_connect_duration_seconds_bucket'
            '{instance=~"$instance", service=~"$service"}[$__rate_interval]))) / 1e3'
            ' and on (instance, job) tlsfwd_build_info')
    assert metric_names(expr) == {"tlsfwd_connect_duration_seconds_bucket", "tlsfwd_build_info"}
    assert label_names(expr) == {"le", "instance", "service", "job"}
    assert label_names("label_values(tlsfwd_connections_total, service)") == {"service"}
    with pytest.raises(AssertionError):
        metric_names("rates(tlsfwd_bytes_total[5m])")
    assert metric_names("label_values(tlsfwd_build_info, instance)") == {"tlsfwd_build_info"}
    m, family = readme_metrics()
    assert m["tlsfwd_handshakes_total"] == {"service", "result"}, m
    assert m["tlsfwd_upstream_healthy"] == {"service", "upstream", "address"}, m
    assert m["tlsfwd_handshake_duration_seconds_bucket"] == {"service", "le"}, m
    assert family["tlsfwd_handshake_duration_seconds_count"] == "tlsfwd_handshake_duration_seconds"
    assert m["process_open_fds"] == set() and m["tlsfwd_config_reloads_total"] == {"result"}, m
    assert len(set(family.values())) >= 27, sorted(family.values())   # every row read


def test_dashboard_is_importable_grafana_json():
    dash = load()
    assert dash["schemaVersion"] >= 36, "Grafana 9+ schema"      # 36: Grafana 9.0
    assert dash["uid"] and dash["title"] and dash["id"] is None
    inputs = {i["name"]: i for i in dash["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["type"] == "datasource"
    assert inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"
    required = {r["id"] for r in dash["__requires"] if r["type"] == "panel"}
    ds = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    ids = []
    for p in all_panels(dash):
        assert isinstance(p["id"], int), p["title"]
        ids.append(p["id"])
        g = p["gridPos"]
        assert 0 <= g["x"] and g["w"] > 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        if p["type"] == "row":
            assert p["panels"] == [] or p["collapsed"], p["title"]
            continue
        assert p["type"] in required, "%s: panel type %s not in __requires" % (p["title"], p["type"])
        assert p["datasource"] == ds, p["title"]
        assert p["targets"] and p.get("description"), p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == ds and t["expr"].strip(), (p["title"], t)
    assert len(ids) == len(set(ids)), "panel ids not unique: %s" % sorted(ids)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    svc = variables["service"]
    assert svc["type"] == "query" and svc["datasource"] == ds
    assert svc["query"]["query"] == svc["definition"] == \
        "label_values(tlsfwd_connections_total, service)"
    uses = set(re.findall(r"\$\{?(\w+)", json.dumps([e for _, e in expressions(dash)])))
    assert uses - {"__rate_interval", "__interval", "__range"} <= set(variables), uses


def test_dashboard_uses_only_metrics_and_labels_of_readme():
    known, family = readme_metrics()
    used = set()
    for where, expr in expressions(load()):
        names = metric_names(expr)
        assert names, "%s: no metric in %r" % (where, expr)
        unknown = names - set(known)
        assert not unknown, "%s: %s not in README's Metrics table" % (where, sorted(unknown))
        labels = set().union(*(known[n] for n in names)) | TARGET_LABELS
        assert label_names(expr) <= labels, "%s: labels %s not on %s" % (
            where, sorted(label_names(expr) - labels), sorted(names))
        used |= names
    missing = set(family.values()) - {family[n] for n in used} - NOT_ON_DASHBOARD
    assert not missing, ("README's metrics %s are not on the dashboard: add a panel to "
                         "contrib/grafana/tlsfwd-dashboard.json or list them in "
                         "NOT_ON_DASHBOARD" % sorted(missing))


def test_dashboard_metrics_and_labels_are_in_a_real_scrape(pki, ssl_upstream, service,
                                                           start_tlsfwd):
    """A service with a client certificate, one verified connection: every
    family has samples (the upstream's notAfter comes with the first one)."""
    up = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service(up.port, cert_file=pki["client"],
                                       key_file=pki["client_key"])},
                       {"metrics_listen": "127.0.0.1:0"})
    exchange_ok(fwd)
    scraped = {}
    for line in http_get(fwd)[2].decode().splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? \S+$", line)
        if m:
            scraped.setdefault(m.group(1), set()).update(
                re.findall(r'(\w+)="', m.group(2) or ""))
    for where, expr in expressions(load()):
        names = metric_names(expr)
        absent = names - set(scraped)
        assert not absent, "%s: %s not in a scrape of tlsfwd" % (where, sorted(absent))
        labels = set().union(*(scraped[n] for n in names)) | TARGET_LABELS
        assert label_names(expr) <= labels, "%s: labels %s not in the scrape's %s" % (
            where, sorted(label_names(expr) - labels), sorted(names))


def test_every_expression_parses(tmp_path):
    rules = ["groups:", "- name: dashboard", "  rules:"]
    for i, (where, expr) in enumerate(expressions(load())):
        if where.startswith("variable"):
            expr = re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", expr)
        rules += ["  - record: dashboard:expr%d" % i,
                  "    expr: %s" % json.dumps(strip_variables(expr))]
    path = tmp_path / "rules.yml"
    path.write_text("\n".join(rules) + "\n")
    r = subprocess.run([need("promtool"), "check", "rules", str(path)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
