"""The benchmark's report logic (bench/bench.py, imported): the per-core busy
shares and the markdown it writes from them. The benchmark itself is
`make bench`; this only checks that what it prints says what it measured."""

import os
import sys

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
