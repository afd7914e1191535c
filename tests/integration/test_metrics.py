"""The Prometheus endpoint ([global] metrics_listen): exact counters after a
known mix of connections (ok, verification failures, refused) with one and
two event loops and across a reload, the text format (every sample's family
has HELP and TYPE; counters end in _total), short answers to anything but
GET /metrics, a slow scraper that cannot stall scrapes or connections, the
paths' health as the loops found it, the configuration's rules (who may
scrape; a change needs a restart), promtool's lint of a real scrape, and a
real Prometheus server scraping tlsfwd."""

import http.client
import re
import socket
import subprocess
import time

import pytest

from harness.clients import exchange_ok, recv_closed, send_quiet, connect
from harness.daemon import check_config
from harness.prometheus import need, Prometheus
from harness.tlsinfo import cert_not_after
from harness.upstreams import closed_port, refusing_port, echo_handler, server_context, Upstream
from test_fault_matrix import fatal_alert
from test_grafana_dashboard import readme_metrics


def _port(fwd):
    return int(fwd.find("metrics")[0]["listen"].rsplit(":", 1)[1])


def scrape(fwd, path="/metrics", method="GET"):
    c = http.client.HTTPConnection("127.0.0.1", _port(fwd), timeout=10)
    c.request(method, path)
    r = c.getresponse()
    body = r.read().decode()
    c.close()
    return r.status, r.getheader("Content-Type"), body


SAMPLE = re.compile(r'^([a-z_]+)(\{[^}]*\})? (\S+)$')


def parse(text):
    """{(name, labels): value}, checking the exposition format on the way."""
    helped, typed, out = set(), {}, {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split()[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            typed[name] = kind
        else:
            m = SAMPLE.match(line)
            assert m, "not a sample line: %r" % line
            name, labels, value = m.groups()
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if typed.get(base) == "histogram":
                assert base in helped, "no HELP for %s" % base
            else:
                assert name in helped and name in typed, "no HELP/TYPE for %s" % name
            if typed.get(name) == "counter":
                assert name.endswith("_total"), name
            key = (name, tuple(sorted(re.findall(r'(\w+)="([^"]*)"', labels or ""))))
            assert key not in out, "sample twice: %s" % (key,)
            out[key] = float(value)
    return out


def value(samples, name, **labels):
    return samples[(name, tuple(sorted(labels.items())))]


def check_histogram(m, name, service, count):
    """Buckets cumulative, ending in +Inf == _count == count; a sum > 0."""
    buckets = sorted(((float(dict(k[1])["le"]), v) for k, v in m.items()
                      if k[0] == name + "_bucket" and dict(k[1])["service"] == service))
    assert len(buckets) == 15 and buckets[0][0] == 0.0005 and buckets[-1][0] == float("inf")
    values = [v for _, v in buckets]
    assert values == sorted(values), values
    assert values[-1] == count == value(m, name + "_count", service=service), (values, count)
    assert (value(m, name + "_sum", service=service) > 0) == (count > 0)


def _mix(fwd, good, bad, denied, alerts=0):
    for _ in range(good):
        exchange_ok(fwd, "good")
    for name, n in (("bad", bad), ("alert", alerts)):
        for _ in range(n):
            s = connect(fwd.ports[name])
            fwd.client_service[(s.getsockname()[:2], s.getpeername()[:2])] = name
            send_quiet(s, b"x")
            recv_closed(s)
            fwd.conn_of(s)
            s.close()
    for _ in range(denied):
        s = connect(fwd.ports["deny"])
        recv_closed(s)
        s.close()


def _wait_closed(fwd, n):
    fwd.wait_for(lambda r: len(fwd.find("close")) >= n, 10, what="%d close lines" % n)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_counters_are_exact_with_one_and_two_loops_and_across_a_reload(
        workers, pki, ssl_upstream, raw_upstream, service, start_tlsfwd):
    good = ssl_upstream(echo_handler)
    bad = ssl_upstream(echo_handler, cert="wrong")
    alerting = raw_upstream(fatal_alert)
    services = {"good": service(good.port), "bad": service(bad.port),
                "deny": service(good.port, deny="127.0.0.1"),
                "alert": service(alerting.port)}
    fwd = start_tlsfwd(services, {"workers": workers, "metrics_listen": "127.0.0.1:0"})
    _mix(fwd, 5, 3, 2, alerts=2)
    _wait_closed(fwd, 10)
    status, ctype, body = scrape(fwd)
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4"), (status, ctype)
    m = parse(body)
    assert value(m, "tlsfwd_connections_total", service="good") == 5
    assert value(m, "tlsfwd_connections_active", service="good") == 0
    assert value(m, "tlsfwd_handshakes_total", service="good", result="ok") == 5
    assert value(m, "tlsfwd_closes_total", service="good", reason="done") == 5
    assert value(m, "tlsfwd_bytes_total", service="good", direction="up") == 5 * 4
    assert value(m, "tlsfwd_bytes_total", service="good", direction="down") == 5 * 4
    assert value(m, "tlsfwd_handshakes_total", service="bad", result="fail") == 3
    assert value(m, "tlsfwd_handshake_failures_total", service="bad", stage="verify") == 3
    assert value(m, "tlsfwd_closes_total", service="bad", reason="handshake_failed") == 3
    assert value(m, "tlsfwd_refused_total", service="deny", reason="denied") == 2
    assert value(m, "tlsfwd_handshakes_total", service="alert", result="alert") == 2
    assert value(m, "tlsfwd_handshakes_total", service="alert", result="fail") == 0
    assert value(m, "tlsfwd_handshake_failures_total", service="alert", stage="handshake") == 2
    assert value(m, "tlsfwd_connections_total", service="deny") == 0
    assert value(m, "tlsfwd_workers") == int(workers)
    assert value(m, "tlsfwd_build_info", version="0.1.0",
                 gnutls=fwd.find("start")[0]["gnutls"]) == 1
    assert value(m, "process_open_fds") > 3 and value(m, "process_max_fds") > 100
    assert value(m, "process_resident_memory_bytes") > 1 << 20
    check_histogram(m, "tlsfwd_handshake_duration_seconds", "good", 5)
    check_histogram(m, "tlsfwd_connect_duration_seconds", "good", 5)
    check_histogram(m, "tlsfwd_handshake_duration_seconds", "bad", 0)
    assert value(m, "tlsfwd_upstream_cert_not_after_timestamp_seconds", service="good") == \
        cert_not_after(pki["server"]).timestamp()
    assert value(m, "tlsfwd_config_reloads_total", result="ok") == 0
    assert abs(value(m, "tlsfwd_config_last_reload_success_timestamp_seconds") - time.time()) < 60
    # a service that survives a reload keeps its counts
    _, rec = fwd.reload()
    assert rec["result"] == "ok", rec
    _mix(fwd, 2, 0, 0)
    _wait_closed(fwd, 12)
    m = parse(scrape(fwd)[2])
    assert value(m, "tlsfwd_connections_total", service="good") == 7
    assert value(m, "tlsfwd_handshakes_total", service="good", result="ok") == 7
    check_histogram(m, "tlsfwd_handshake_duration_seconds", "good", 7)
    assert value(m, "tlsfwd_config_reloads_total", result="ok") == 1


def test_only_get_metrics_is_served(ssl_upstream, service, start_tlsfwd):
    up = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service(up.port)}, {"metrics_listen": "127.0.0.1:0"})
    assert scrape(fwd, "/")[0] == 404
    assert scrape(fwd, "/metrics", "POST")[0] == 405
    s = socket.create_connection(("127.0.0.1", _port(fwd)))
    s.sendall(b"nonsense\r\n\r\n")
    assert recv_closed(s)[0].startswith(b"HTTP/1.1 400 "), "no 400 for a bad request"
    s.close()
    s = socket.create_connection(("127.0.0.1", _port(fwd)))
    s.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 9000)
    assert recv_closed(s)[0].startswith(b"HTTP/1.1 431 "), "an endless request was taken"
    s.close()


def test_slow_scrapers_stall_nothing(ssl_upstream, service, start_tlsfwd):
    """Twenty scrapers that send half a request and wait: scrapes beyond the
    sixteen they may hold are closed at once; connections and a scrape after
    they go work; they are closed within the 10 s limit."""
    up = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service(up.port)}, {"metrics_listen": "127.0.0.1:0"})
    slow = []
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", _port(fwd)))
        s.sendall(b"GET /metr")
        slow.append(s)
    for _ in range(3):
        exchange_ok(fwd)            # the proxy is not stalled
    t0 = time.monotonic()
    for s in slow:
        s.settimeout(15)
        try:                        # closed: at once (over 16) or by the limit
            assert s.recv(1) == b""
        except ConnectionResetError:
            pass                    # closed with the request unread: a reset
    assert time.monotonic() - t0 < 12
    assert scrape(fwd)[0] == 200


def test_metrics_listen_beyond_loopback_needs_metrics_allow(tlsfwd_bin, tmp_path):
    ini = tmp_path / "t.ini"
    ini.write_text("[global]\nmetrics_listen = 0.0.0.0:9100\n"
                   "[s]\nlisten = 127.0.0.1:0\nupstream = example.com:443\n")
    rc, errs, _ = check_config(tlsfwd_bin, ini)
    assert rc != 0 and any(l == 2 and "metrics_allow" in m for _, l, m in errs), errs
    ini.write_text("[global]\nmetrics_listen = 0.0.0.0:9100\nmetrics_allow = 10.0.0.0/8\n"
                   "[s]\nlisten = 127.0.0.1:0\nupstream = example.com:443\n")
    assert check_config(tlsfwd_bin, ini)[0] == 0


def test_metrics_listen_change_needs_a_restart(ssl_upstream, service, start_tlsfwd):
    up = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service(up.port)}, {"metrics_listen": "127.0.0.1:0"})
    fwd.write_config({"svc": service(up.port)}, {"metrics_listen": "127.0.0.2:0"})
    _, rec = fwd.reload()
    assert rec["result"] == "fail", rec
    status, _, body = scrape(fwd)
    assert status == 200
    assert value(parse(body), "tlsfwd_config_reloads_total", result="fail") == 1


def test_client_certificate_expiry_is_a_metric(pki, ssl_upstream, service, start_tlsfwd):
    up = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service(up.port, cert_file=pki["client"],
                                       key_file=pki["client_key"])},
                       {"metrics_listen": "127.0.0.1:0"})
    m = parse(scrape(fwd)[2])
    assert value(m, "tlsfwd_client_cert_not_after_timestamp_seconds", service="svc") == \
        cert_not_after(pki["client"]).timestamp()


def _healthy(fwd):
    """{(upstream, address): value} of tlsfwd_upstream_healthy for service svc."""
    return {(dict(k[1])["upstream"], dict(k[1])["address"]): v
            for k, v in parse(scrape(fwd)[2]).items()
            if k[0] == "tlsfwd_upstream_healthy" and dict(k[1])["service"] == "svc"}


def _wait_healthy(fwd, want):
    deadline = time.monotonic() + 10
    while (got := _healthy(fwd)) != want:
        assert time.monotonic() < deadline, (got, want)
        time.sleep(0.05)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_upstream_health_is_a_metric(workers, pki, cleanup, ssl_upstream, service,
                                     start_tlsfwd):
    """Two upstreams, the first refusing: it shows 0 once a connection failed
    over from it (whichever loop had the client), then 1 again when it is back
    and a trial connection succeeded; the other stays 1 throughout."""
    port_a = closed_port()
    b = ssl_upstream(echo_handler)
    a_name, b_name = "127.0.0.1:%d" % port_a, "127.0.0.1:%d" % b.port
    fwd = start_tlsfwd({"svc": service("%s, %s" % (a_name, b_name))},
                       {"workers": workers, "metrics_listen": "127.0.0.1:0"})
    _wait_healthy(fwd, {(a_name, a_name): 1, (b_name, b_name): 1})
    hs, _ = exchange_ok(fwd)
    assert hs["upstream"] == b_name, hs
    _wait_healthy(fwd, {(a_name, a_name): 0, (b_name, b_name): 1})
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port_a))
    s.listen(64)
    s.settimeout(0.2)
    cleanup.append(Upstream(echo_handler, ctx=server_context(pki["server"], pki["server_key"]),
                            sock=s))
    deadline = time.monotonic() + 10 * 1.5
    while _healthy(fwd)[(a_name, a_name)] == 0:     # the trial comes after 1 s
        assert time.monotonic() < deadline, fwd.log_text(20)
        exchange_ok(fwd)
        time.sleep(0.1)
    assert _healthy(fwd) == {(a_name, a_name): 1, (b_name, b_name): 1}


def test_promtool_accepts_the_exposition(pki, ssl_upstream, service, start_tlsfwd):
    """A scrape with a sample of every family of README's table, after a mix of
    outcomes (ok, verification failures, a refusal, a client certificate, a
    pool, a path refusing connections and marked down), passes `promtool check
    metrics` (the format and Prometheus's naming lint) without a word; and
    promtool does fail on a broken exposition, so that the check can fail."""
    good = ssl_upstream(echo_handler)
    bad = ssl_upstream(echo_handler, cert="wrong")
    fwd = start_tlsfwd({"good": service(good.port, pool="1"), "bad": service(bad.port),
                        "deny": service(good.port, deny="127.0.0.1"),
                        "two": service("127.0.0.1:%d, 127.0.0.1:%d" % (refusing_port(), good.port),
                                       cert_file=pki["client"], key_file=pki["client_key"])},
                       {"metrics_listen": "127.0.0.1:0"})
    _mix(fwd, 3, 2, 1)
    exchange_ok(fwd, "two")
    _wait_closed(fwd, 6)
    text = scrape(fwd)[2]
    m = parse(text)
    names = {name for name, _ in m}
    table, _ = readme_metrics()
    assert set(table) <= names, "no sample of %s" % sorted(set(table) - names)
    assert value(m, "tlsfwd_handshake_failures_total", service="bad", stage="verify") == 2
    assert value(m, "tlsfwd_refused_total", service="deny", reason="denied") == 1
    assert 0 in {v for k, v in m.items() if k[0] == "tlsfwd_upstream_healthy"
                 and dict(k[1])["service"] == "two"}
    promtool = need("promtool")
    r = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == b"", \
        "promtool check metrics: rc=%d\n%s" % (r.returncode, r.stdout.decode())
    for broken, why in ((text + "tlsfwd_bogus{x=} 1\n", "a malformed sample"),
                        (text + "# TYPE tlsfwd_extra counter\ntlsfwd_extra 1\n",
                         "a counter without _total")):
        r = subprocess.run([promtool, "check", "metrics"], input=broken.encode(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        assert r.returncode != 0 and r.stdout.strip(), "promtool took %s" % why


def _series(prom, expr, *labels):
    """{(label values...): value} of an instant query."""
    return {tuple(met.get(k) for k in labels): v for met, v in prom.query(expr)}


def test_a_real_prometheus_scrapes_tlsfwd(ssl_upstream, service, start_tlsfwd, tmp_path):
    """A real Prometheus (its own config, storage and free port; never the
    packaged service on :9090) scrapes tlsfwd every second after a known mix
    (3 ok, 1 verification failure, 1 refused): its HTTP API then returns
    tlsfwd_handshakes_total with exactly those counts per service and result,
    the target is up with no scrape error, and it took every sample of the
    exposition. Prints how long Prometheus took to be ready and to answer."""
    good = ssl_upstream(echo_handler)
    bad = ssl_upstream(echo_handler, cert="wrong")
    fwd = start_tlsfwd({"good": service(good.port), "bad": service(bad.port),
                        "deny": service(good.port, deny="127.0.0.1")},
                       {"metrics_listen": "127.0.0.1:0"})
    _mix(fwd, 3, 1, 1)
    _wait_closed(fwd, 4)
    want = {(s, r): 0.0 for s in ("good", "bad", "deny") for r in ("ok", "alert", "fail")}
    want.update({("good", "ok"): 3.0, ("bad", "fail"): 1.0})
    exposed = len(parse(scrape(fwd)[2]))
    target = "127.0.0.1:%d" % _port(fwd)
    with Prometheus(tmp_path, [target]) as prom:
        prom.wait_ready()
        deadline = prom.started + 30
        while (got := _series(prom, "tlsfwd_handshakes_total", "service", "result")) != want:
            assert time.monotonic() < deadline, \
                "tlsfwd_handshakes_total: %r, want %r; targets: %r\n%s" % (
                    got, want, prom.targets(), prom.log_tail())
            time.sleep(0.1)
        answered = time.monotonic() - prom.started
        print("prometheus ready after %.2f s; tlsfwd_handshakes_total answered after %.2f s"
              % (prom.ready_after, answered))
        assert {(m["job"], m["instance"]) for m, _ in
                prom.query("tlsfwd_handshakes_total")} == {("tlsfwd", target)}
        assert _series(prom, "tlsfwd_handshake_failures_total{stage=\"verify\"}",
                       "service") == {("good",): 0, ("bad",): 1, ("deny",): 0}
        assert _series(prom, "tlsfwd_refused_total{reason=\"denied\"}",
                       "service") == {("good",): 0, ("bad",): 0, ("deny",): 1}
        assert _series(prom, "up", "instance") == {(target,): 1}
        assert _series(prom, "scrape_samples_scraped", "instance") == {(target,): exposed}
        [t] = prom.targets()
        assert t["health"] == "up" and t["lastError"] == "", t
