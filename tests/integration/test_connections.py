"""GET /connections on the metrics endpoint: exactly the open connections,
each with what its log lines say (id, client, upstream, TLS version, cipher,
resumed) and its byte counts, with one and two event loops; a connection
still setting up shows its state; a scraper that stops reading stalls
neither connections nor other scrapes, and at most four answers run at
once (more get 503) and none delays the exit."""

import json
import signal
import socket
import time

import pytest

from harness.clients import exchange_ok, recv_exact
from harness.scrape import http_get, metrics_port
from harness.upstreams import SilentHolder, echo_handler


def get(fwd, path="/connections"):
    return http_get(fwd, path)


def listing(fwd):
    status, ctype, body = get(fwd)
    assert status == 200 and ctype == "application/json", (status, ctype, body[:200])
    return {c["id"]: c for c in json.loads(body)}


def _open(fwd, client, n, service="svc"):
    """n relaying clients, each having echoed a message of its own length:
    {conn id: (socket, handshake record, bytes sent)}."""
    out = {}
    for i in range(n):
        s = client(fwd, service)
        msg = b"m" * (10 + i)
        s.sendall(msg)
        assert recv_exact(s, len(msg)) == msg
        hs = fwd.conn_of(s)
        out[int(hs["conn"])] = (s, hs, len(msg))
    return out


@pytest.mark.parametrize("workers", ["1", "2"])
def test_lists_exactly_the_open_connections(workers, ssl_upstream, service, start_tlsfwd,
                                            client):
    up = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service(up.port)},
                       {"workers": workers, "metrics_listen": "127.0.0.1:0"})
    assert listing(fwd) == {}
    conns = _open(fwd, client, 6)
    got = listing(fwd)
    assert set(got) == set(conns), (sorted(got), sorted(conns))
    for cid, (s, hs, sent) in conns.items():
        c = got[cid]
        assert c["service"] == "svc" and c["client"] == "%s:%d" % s.getsockname()[:2], c
        assert c["upstream"] == hs["upstream"] == "127.0.0.1:%d" % up.port, c
        assert c["state"] == "relaying", c
        assert (c["bytes_up"], c["bytes_down"]) == (sent, sent), c
        assert (c["tls_version"], c["cipher"]) == (hs["version"], hs["cipher"]), c
        assert c["resumed"] == (hs["resumed"] == "yes"), c
        assert 0 <= c["idle_ms"] <= c["age_ms"] < 60000, c
    closing = sorted(conns)[:3]
    for cid in closing:
        conns.pop(cid)[0].close()
    for cid in closing:
        fwd.wait_close(str(cid))
    assert set(listing(fwd)) == set(conns)


def test_a_connection_setting_up_shows_its_state(cleanup, service, start_tlsfwd, client):
    silent = SilentHolder()        # takes the TCP connection, never a ClientHello answer
    cleanup.append(silent)
    fwd = start_tlsfwd({"svc": service(silent.port, handshake_timeout="30s")},
                       {"metrics_listen": "127.0.0.1:0"})
    s = client(fwd)
    deadline = time.monotonic() + 10
    while True:
        got = list(listing(fwd).values())
        if got and got[0]["state"] == "handshaking":
            break
        assert time.monotonic() < deadline, got
        time.sleep(0.05)
    c = got[0]
    assert c["client"] == "%s:%d" % s.getsockname()[:2], c
    assert c["upstream"] == "127.0.0.1:%d" % silent.port, c
    assert (c["tls_version"], c["cipher"], c["resumed"]) == (None, None, False), c
    assert (c["bytes_up"], c["bytes_down"]) == (0, 0), c


def _stalled_scraper(fwd):
    """A /connections request whose answer is never read (a tiny window)."""
    port = metrics_port(fwd)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET /connections HTTP/1.1\r\nHost: x\r\n\r\n")
    return s


def test_stalled_scrapers_stall_nothing_and_are_bounded(ssl_upstream, service, start_tlsfwd,
                                                        client):
    """With 800 connections open (an answer, ~260 KB, far larger than the
    buffers of a scraper that reads nothing: 16 KiB to send, 64 KiB of
    tlsfwd's), four stalled answers are the most: a fifth gets 503;
    connections and /metrics go on meanwhile; an answer read to its end
    after the stall is whole and lists exactly the open connections."""
    up = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service(up.port)},
                       {"workers": "2", "metrics_listen": "127.0.0.1:0"})
    socks = [client(fwd) for _ in range(800)]
    for s in socks:
        s.sendall(b"ping")
    for s in socks:
        assert recv_exact(s, 4) == b"ping"
    conns = listing(fwd)
    assert len(conns) == 800
    stalled = [_stalled_scraper(fwd) for _ in range(4)]
    time.sleep(0.2)                 # let them fill their windows (no signal for "stuck")
    assert get(fwd)[0] == 503
    assert get(fwd, "/metrics")[0] == 200
    for _ in range(3):
        exchange_ok(fwd)
    # the first stalled one, read to its end: whole, and nothing but open ones
    s = stalled[0]
    s.settimeout(10)
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 "), head
    listed = {c["id"] for c in json.loads(body)}
    assert listed == set(conns), (len(listed), len(conns))
    stalled[1].close()
    deadline = time.monotonic() + 10
    while get(fwd)[0] != 200:       # a closed one is noticed at its next write
        assert time.monotonic() < deadline
        time.sleep(0.1)
    # stalled answers do not hold up the exit (shutdown_timeout is 2 s here)
    for s in socks:
        s.close()
    t0 = time.monotonic()
    fwd.signal(signal.SIGTERM)
    assert fwd.wait_exit() == 0
    assert time.monotonic() - t0 < 1.5, time.monotonic() - t0
    for s in stalled[2:]:
        s.close()
