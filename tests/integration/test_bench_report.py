"""The benchmark's report logic (bench/bench.py, imported): the per-core busy
shares and the markdown it writes from them; the metrics-on row (its
configuration, its 1 s scraper, the cost of a scrape, the difference it
reports against metrics off). The benchmark itself is `make bench`; this only
checks that what it prints says what it measured."""

import os
import sys
import time
import types

from harness.daemon import check_config

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
import bench  # noqa: E402


def test_cpu_ticks_has_every_cpu_and_idle_within_total():
    ticks = bench.cpu_ticks()
    assert set(ticks) >= set(os.sched_getaffinity(0)), ticks
    assert all(0 <= idle <= total for total, idle in ticks.values()), ticks


def test_cpus_busy_is_the_share_of_non_idle_ticks_of_the_chosen_cpus():
    before = {0: (1000, 500), 1: (1000, 900)}
    after = {0: (1100, 500), 1: (1100, 975)}        # cpu0 all busy, cpu1 25% busy
    assert bench.cpus_busy(before, after, {0}) == 1.0
    assert abs(bench.cpus_busy(before, after, {1}) - 0.25) < 1e-9
    assert abs(bench.cpus_busy(before, after, {0, 1}) - 0.625) < 1e-9


def _meta():
    return {"date": "2026-12-02 00:00 UTC", "nproc": 2, "cpu": "test CPU", "kernel": "6",
            "mode": "test", "size_mib": 1, "reps": 1, "conns": 32, "duration_s": 1,
            "idle_conns": 1, "pinning": "test", "notes": []}


def test_markdown_shows_load_and_proxy_core_busy_per_run():
    rows = [{"key": "tlsfwd", "label": "tlsfwd", "errors": [], "notes": [],
             "keepalive_rps": 1000.0, "keepalive_cpu_us_per_req": 9.5,
             "keepalive_load_core_busy": 0.98, "keepalive_proxy_core_busy": 0.71,
             "newconn_load_core_busy": 1.0, "newconn_proxy_core_busy": 0.704},
            {"key": "socat", "label": "socat", "errors": [], "notes": []}]
    md = bench.markdown(_meta(), rows, bench.ratios(rows))
    line = [x for x in md.splitlines() if x.startswith("| tlsfwd |") and "/" in x]
    assert line == ["| tlsfwd | — | — | 98 / 71 | 100 / 70 |"], md
    assert "| socat |" not in md.split("How busy")[1].split("Ratios")[0], md


def test_the_metrics_row_sits_beside_the_tlsfwd_row():
    keys = [k for k, _ in bench.ROWS]
    assert keys.index("tlsfwd-metrics") == keys.index("tlsfwd") + 1, keys


def test_metrics_row_config_turns_metrics_on_and_tlsfwd_accepts_it(tlsfwd_bin, pki, tmp_path):
    b = bench.Bench(types.SimpleNamespace(tlsfwd=tlsfwd_bin, size_mib=1, nofile=4096,
                                          idle=10), str(tmp_path))
    b.ca, b.tls_port = pki["ca"], 4433
    argv, cpus = b.proxy_command("tlsfwd-metrics", 18080, "localhost", "localhost")
    conf = argv[argv.index("-c") + 1]
    text = open(conf).read()
    assert "metrics_listen = 127.0.0.1:%d" % b.metrics_ports[18080] in text, text
    assert cpus == b.proxy_cpus           # pinned like the tlsfwd row
    assert check_config(tlsfwd_bin, conf)[0] == 0, check_config(tlsfwd_bin, conf)
    argv, _ = b.proxy_command("tlsfwd", 18081, "localhost", "localhost")
    assert "metrics_listen" not in open(argv[argv.index("-c") + 1]).read()
    assert 18081 not in b.metrics_ports


def test_scraper_and_scrape_cost_against_tlsfwd(ssl_upstream, service, start_tlsfwd):
    from harness.scrape import metrics_port
    from harness.upstreams import echo_handler
    fwd = start_tlsfwd({"bench": service(ssl_upstream(echo_handler).port)},
                       {"metrics_listen": "127.0.0.1:0"})
    port = metrics_port(fwd)
    sc = bench.Scraper(port, interval=0.1)
    sc.start()
    time.sleep(0.75)
    # tlsfwd is in this process group here (bench.start gives each peer its own)
    proc = types.SimpleNamespace(pid=os.getpgrp(), scraper=sc)
    cost = bench.scrape_cost(proc, port, n=20)
    sc.stop()
    assert not sc.is_alive() and sc.failed == [] and sc.ok >= 3, (sc.ok, sc.failed)
    assert b"tlsfwd_connections_total{service=\"bench\"} 0" in sc.last
    assert cost["scrapes"] >= 20 and cost["bytes"] == len(sc.last), cost
    assert cost["proxy_cpu_us_per_scrape"] > 0, cost


def _cost_rows():
    common = {"errors": [], "notes": []}
    return [dict(common, key="tlsfwd", label="tlsfwd", keepalive_rps=25000.0,
                 keepalive_cpu_us_per_req=25.0, newconn_cpu_us_per_req=250.0),
            dict(common, key="tlsfwd-metrics", label=dict(bench.ROWS)["tlsfwd-metrics"],
                 keepalive_rps=25000.0, keepalive_cpu_us_per_req=25.5,
                 newconn_cpu_us_per_req=247.5,
                 scrape_cost={"scrapes": 500, "bytes": 8351,
                              "proxy_cpu_us_per_scrape": 100.0})]


def test_metrics_cost_is_on_minus_off_per_unit_of_work():
    cost = {c["field"]: c for c in bench.metrics_cost(_cost_rows())}
    ka = cost["keepalive_cpu_us_per_req"]
    assert (ka["on"], ka["off"]) == (25.5, 25.0) and abs(ka["diff"] - 0.5) < 1e-9
    assert abs(ka["pct"] - 2.0) < 1e-9
    assert abs(cost["newconn_cpu_us_per_req"]["pct"] + 1.0) < 1e-9
    assert cost["bulk_down_cpu_s_per_gb"]["diff"] is None
    assert bench.metrics_cost(_cost_rows()[:1]) == []       # the run had no metrics row


def test_markdown_states_the_cpu_per_request_difference_and_a_scrapes_cost():
    rows = _cost_rows()
    md = bench.markdown(_meta(), rows, bench.ratios(rows))
    part = md.split("Metrics on against off")[1]
    assert "- keep-alive CPU per request: 25.5 on vs 25.0 µs off: **+0.50 µs (+2.0%)**" \
        in part, part
    assert "- new-conn CPU per request: 247.5 on vs 250.0 µs off: **−2.50 µs (−1.0%)**" \
        in part, part
    assert "- bulk down CPU per GB: not measured" in part, part
    assert "costs tlsfwd **100.0 µs** of CPU" in part and "0.0040 µs per keep-alive request" \
        in part, part
    only_off = rows[:1]
    assert "Metrics on against off" not in bench.markdown(_meta(), only_off,
                                                         bench.ratios(only_off))
