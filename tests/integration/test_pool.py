"""The warm pool (pool = N): a client takes a connection that is already
connected and verified (handshake line pooled=yes with its real set-up times
and its wait), a replacement starts at once; a pool to an upstream with a bad
certificate never relays; an upstream that closes idle connections never
costs a client; a greeting sent while the connection waited reaches the
client first and intact; pool_max_idle recycles with close_notify; reload
and SIGTERM close a full pool cleanly; no fd leak; the memory a pooled
connection holds."""

import concurrent.futures
import signal
import time

import pytest

from harness.clients import exchange_ok, recv_exact
from harness.procfs import rss_kib
from harness.scrape import sample
from harness.upstreams import Upstream, echo_handler, server_context


def _until_close_notify(conn):
    """Serves nothing; returns when tlsfwd's close_notify comes (a plain EOF
    or a reset raises: an unclean close is an error)."""
    while True:
        d = conn.recv(65536)
        if not d:
            return "close_notify"
        conn.sendall(d)


def _wait_ready(fwd, n, service="svc", timeout=10):
    deadline = time.monotonic() + timeout
    while sample(fwd, "tlsfwd_pool_ready", service=service) != n:
        assert time.monotonic() < deadline, (sample(fwd, "tlsfwd_pool_ready", service=service),
                                             fwd.log_text(10))
        time.sleep(0.02)


def _start(start_tlsfwd, service, port, pool, glob=None, **over):
    g = {"metrics_listen": "127.0.0.1:0"}
    g.update(glob or {})
    return start_tlsfwd({"svc": service(port, pool=str(pool), **over)}, g)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_client_takes_a_verified_connection_and_one_replaces_it(workers, ssl_upstream,
                                                                  service, start_tlsfwd):
    up = ssl_upstream(echo_handler)
    fwd = _start(start_tlsfwd, service, up.port, 4, {"workers": workers})
    _wait_ready(fwd, 4)
    assert up.accepted == 4
    time.sleep(0.1)                 # ready connections wait: pool_wait_ms > 0
    for i in range(6):
        hs, cl = exchange_ok(fwd, data=b"hello %d" % i)
        assert hs.get("pooled") == "yes", hs
        assert float(hs["pool_wait_ms"]) > 0 and float(hs["handshake_ms"]) > 0, hs
        assert hs["verify"] == "ok", hs
        assert (int(cl["bytes_up"]), int(cl["bytes_down"])) == (7, 7), cl
        _wait_ready(fwd, 4)         # the replacement is in before the next client
    assert up.accepted == 10
    assert sample(fwd, "tlsfwd_pool_taken_total", service="svc") == 6
    assert sample(fwd, "tlsfwd_pool_missed_total", service="svc") == 0
    assert sample(fwd, "tlsfwd_handshakes_total", service="svc", result="ok") == 6


def test_a_pool_to_a_bad_certificate_never_relays(ssl_upstream, service, start_tlsfwd, client):
    up = ssl_upstream(echo_handler, cert="wrong")
    fwd = _start(start_tlsfwd, service, up.port, 2)
    rec = fwd.wait_event("pool", service="svc")
    assert (rec["result"], rec["stage"], rec["pooled"]) == ("fail", "verify", "yes"), rec
    assert "conn" not in rec and "client" not in rec, rec
    s = client(fwd)
    s.sendall(b"secret")
    hs = fwd.conn_of(s)
    assert (hs["result"], hs["stage"]) == ("fail", "verify") and "pooled" not in hs, hs
    assert up.results.empty()       # no handler ever saw a byte
    assert sample(fwd, "tlsfwd_pool_ready", service="svc") == 0
    assert sample(fwd, "tlsfwd_pool_failures_total", service="svc") >= 1
    # the refill backs off (1 s, 2 s, ...): a handful of tries, not a storm
    time.sleep(1.5)
    assert up.accepted <= 6, up.accepted


def _closes_soon(conn):
    """Closes each connection 0.2 s after its handshake (close_notify)."""
    time.sleep(0.2)
    conn.unwrap()
    return 0


def test_an_upstream_closing_idle_connections_never_costs_a_client(ssl_upstream, service,
                                                                   start_tlsfwd, client):
    """Every pooled connection is closed by the upstream while it waits; each
    is dropped and replaced, and clients arriving throughout all get a
    working connection (a closed one is never handed out)."""
    closing = ssl_upstream(_closes_soon)
    fwd = _start(start_tlsfwd, service, closing.port, 2)
    deadline = time.monotonic() + 10
    while sample(fwd, "tlsfwd_pool_drops_total", service="svc", reason="upstream_closed") < 4:
        assert time.monotonic() < deadline, fwd.log_text(10)
        time.sleep(0.05)
    # clients now: any handed out one was alive; those that raced a close
    # fail over to nothing (the upstream closes every connection): so count
    # only that no client got a dead connection without a handshake line
    for _ in range(5):
        s = client(fwd)
        hs = fwd.conn_of(s)
        assert hs["result"] == "ok", hs
        s.close()


def _greets(conn):
    """Greets first (SMTP style), then echoes."""
    conn.sendall(b"220 upstream ready\r\n")
    return echo_handler(conn)


def test_a_greeting_sent_while_pooled_reaches_the_client_first(ssl_upstream, service,
                                                               start_tlsfwd, client):
    up = ssl_upstream(_greets)
    fwd = _start(start_tlsfwd, service, up.port, 1)
    _wait_ready(fwd, 1)
    time.sleep(0.2)                 # the greeting is in tlsfwd before any client
    s = client(fwd)
    assert recv_exact(s, 20) == b"220 upstream ready\r\n"
    s.sendall(b"EHLO x\r\n")
    assert recv_exact(s, 8) == b"EHLO x\r\n"
    hs = fwd.conn_of(s)
    assert hs.get("pooled") == "yes", hs
    s.close()
    cl = fwd.wait_close(hs["conn"])
    assert int(cl["bytes_down"]) == 28, cl


def _greets_too_much(conn):
    conn.sendall(b"x" * (256 * 1024))
    return echo_handler(conn)


def test_a_greeting_beyond_a_buffer_drops_the_connection(ssl_upstream, service, start_tlsfwd):
    up = ssl_upstream(_greets_too_much)
    fwd = _start(start_tlsfwd, service, up.port, 1)
    rec = fwd.wait_event("pool_drop", service="svc")
    assert rec["reason"] == "greeting_too_long" and rec["level"] == "warn", rec


def test_pool_max_idle_recycles_with_close_notify(ssl_upstream, service, start_tlsfwd):
    up = ssl_upstream(_until_close_notify)
    fwd = _start(start_tlsfwd, service, up.port, 2, pool_max_idle="1s")
    _wait_ready(fwd, 2)
    deadline = time.monotonic() + 10
    while up.results.qsize() < 4:   # each recycled one ended with close_notify
        assert time.monotonic() < deadline, (up.results.qsize(), up.errors)
        time.sleep(0.05)
    assert not up.errors, up.errors
    assert sample(fwd, "tlsfwd_pool_drops_total", service="svc", reason="max_idle") >= 4
    _wait_ready(fwd, 2)
    assert exchange_ok(fwd)[0].get("pooled") == "yes"


def test_reload_and_sigterm_close_a_full_pool_cleanly(ssl_upstream, service, start_tlsfwd):
    up = ssl_upstream(_until_close_notify)
    fwd = _start(start_tlsfwd, service, up.port, 3)
    _wait_ready(fwd, 3)
    fds = sample(fwd, "process_open_fds")
    _, rec = fwd.reload()
    assert rec["result"] == "ok", rec
    _wait_ready(fwd, 3)
    deadline = time.monotonic() + 10
    while up.results.qsize() < 3:   # the old generation's pool: close_notify
        assert time.monotonic() < deadline, up.errors
        time.sleep(0.05)
    for _ in range(3):
        exchange_ok(fwd)
    _wait_ready(fwd, 3)
    assert sample(fwd, "process_open_fds") == fds        # no fd leak
    t0 = time.monotonic()
    fwd.signal(signal.SIGTERM)
    assert fwd.wait_exit() == 0
    assert time.monotonic() - t0 < 1.5
    deadline = time.monotonic() + 5
    while up.results.qsize() < 3 + 3 + 3:   # every pooled one saw close_notify
        assert time.monotonic() < deadline, (up.results.qsize(), up.errors)
        time.sleep(0.05)
    assert not up.errors, up.errors


def test_memory_per_pooled_connection(ssl_upstream, service, start_tlsfwd, asan_build):
    up = ssl_upstream(echo_handler)
    fwd = _start(start_tlsfwd, service, up.port, 0)
    exchange_ok(fwd)
    base = rss_kib(fwd.pid)
    fwd.write_config({"svc": service(up.port, pool="200")}, {"metrics_listen": "127.0.0.1:0"})
    _, rec = fwd.reload()
    assert rec["result"] == "ok", rec
    _wait_ready(fwd, 200, timeout=30)
    per = (rss_kib(fwd.pid) - base) * 1024 / 200
    print("idle memory per pooled connection: %.0f bytes" % per)
    assert asan_build or per < 64 * 1024, per


@pytest.mark.parametrize("tickets", [2, 0], ids=["with_tickets", "no_tickets"])
def test_a_tls13_upstream_judging_our_certificate(tickets, pki, cleanup, service,
                                                  start_tlsfwd):
    """Our certificate asked for in TLS 1.3: the upstream's verdict comes with
    its first record. With tickets it comes while the connection waits in the
    pool; without (slapd), the adopted connection waits for it as one without
    a pool does. Either way the handshake line is pooled=yes and result=ok."""
    ctx = server_context(pki["server"], pki["server_key"], client_ca=pki["ca"])
    ctx.num_tickets = tickets
    up = Upstream(echo_handler, ctx=ctx)
    cleanup.append(up)
    fwd = _start(start_tlsfwd, service, up.port, 1, cert_file=pki["client"],
                 key_file=pki["client_key"])
    _wait_ready(fwd, 1)
    hs, _ = exchange_ok(fwd)
    assert hs.get("pooled") == "yes" and hs["version"] == "TLS1.3", hs


def test_a_tls13_upstream_refusing_our_certificate_fails_the_pool(pki, cleanup, service,
                                                                  start_tlsfwd):
    ctx = server_context(pki["server"], pki["server_key"], client_ca=pki["other_ca"])
    up = Upstream(echo_handler, ctx=ctx)
    cleanup.append(up)
    fwd = _start(start_tlsfwd, service, up.port, 1, cert_file=pki["client"],
                 key_file=pki["client_key"])
    rec = fwd.wait_event("pool", service="svc")
    assert (rec["result"], rec["alert_from"]) == ("alert", "upstream"), rec
    assert sample(fwd, "tlsfwd_pool_ready", service="svc") == 0


def test_the_pool_follows_routing_and_drops_a_path_found_down(ssl_upstream, service,
                                                              start_tlsfwd):
    """Two upstreams (priority): the pool is on the first. It stops taking
    connections (its open ones stay up): the next refill finds it refusing,
    the path is marked down, the pooled connection still on it is closed
    (path_down) and the pool refills on the second."""
    a = ssl_upstream(echo_handler)
    b = ssl_upstream(echo_handler)
    a_name, b_name = "127.0.0.1:%d" % a.port, "127.0.0.1:%d" % b.port
    fwd = start_tlsfwd({"svc": service("%s, %s" % (a_name, b_name), pool="2")},
                       {"metrics_listen": "127.0.0.1:0"})
    _wait_ready(fwd, 2)
    assert (a.accepted, b.accepted) == (2, 0)
    a._stop = True
    a.sock.close()                  # refuses new connections; the pooled two stay
    hs, _ = exchange_ok(fwd)
    assert hs.get("pooled") == "yes" and hs["upstream"] == a_name, hs
    fwd.wait_event("upstream_down", service="svc", address=a_name)
    deadline = time.monotonic() + 10
    while sample(fwd, "tlsfwd_pool_drops_total", service="svc", reason="path_down") != 1:
        assert time.monotonic() < deadline, fwd.log_text(20)
        time.sleep(0.02)
    _wait_ready(fwd, 2)
    assert b.accepted == 2
    hs, _ = exchange_ok(fwd)
    assert hs.get("pooled") == "yes" and hs["upstream"] == b_name, hs


def test_a_burst_beyond_the_pool_falls_back_without_errors(ssl_upstream, service, start_tlsfwd):
    """32 clients at once with pool = 4: the first take the ready ones, the
    rest set up as without a pool; every one is served, and the pool is full
    again afterwards."""
    up = ssl_upstream(echo_handler)
    fwd = _start(start_tlsfwd, service, up.port, 4)
    _wait_ready(fwd, 4)
    with concurrent.futures.ThreadPoolExecutor(32) as ex:
        results = list(ex.map(lambda i: exchange_ok(fwd, data=b"burst %02d" % i), range(32)))
    pooled = sum(1 for hs, _ in results if hs.get("pooled") == "yes")
    assert 4 <= pooled < 32, pooled
    assert sample(fwd, "tlsfwd_pool_taken_total", service="svc") == pooled
    assert sample(fwd, "tlsfwd_pool_missed_total", service="svc") == 32 - pooled
    _wait_ready(fwd, 4)
