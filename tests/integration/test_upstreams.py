"""Several upstreams in one service: failover when the first refuses, is
blackholed or shows a bad certificate (every client served), recovery when
it comes back, balance = roundrobin, each upstream verified under its own
name, and path health kept across a reload."""

import os
import socket
import time

import pytest

from harness.clients import exchange_ok
from harness.logfmt import num
from harness.namespaces import with_hosts
from harness.upstreams import (closed_port, echo_handler, server_context, syn_dropping_listener,
                               Upstream)


def _tls_upstream(pki, cleanup, cert="server", port=0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(64)
    s.settimeout(0.2)
    up = Upstream(echo_handler, ctx=server_context(pki[cert], pki[cert + "_key"]), sock=s)
    cleanup.append(up)
    return up


def _start(start_tlsfwd, service, upstreams, **over):
    opts = dict(verify_hostname="localhost")
    opts.update(over)
    return start_tlsfwd({"svc": service(", ".join(upstreams), **opts)})


def test_refused_first_upstream_fails_over_and_comes_back(pki, cleanup, service, start_tlsfwd):
    port_a = closed_port()
    b = _tls_upstream(pki, cleanup)
    fwd = _start(start_tlsfwd, service, ["127.0.0.1:%d" % port_a, "127.0.0.1:%d" % b.port])
    hs, _ = exchange_ok(fwd)
    assert (hs["upstream"], num(hs["attempts"])) == ("127.0.0.1:%d" % b.port, 2), hs
    down = fwd.wait_event("upstream_down", service="svc", address="127.0.0.1:%d" % port_a)
    assert down["upstream"] == "127.0.0.1:%d" % port_a, down
    for _ in range(5):          # the dead one is no longer tried first
        hs, _ = exchange_ok(fwd)
        assert (hs["upstream"], num(hs["attempts"])) == ("127.0.0.1:%d" % b.port, 1), hs
    a = _tls_upstream(pki, cleanup, port=port_a)
    back = time.monotonic()
    while True:
        hs, _ = exchange_ok(fwd)
        if hs["upstream"] == "127.0.0.1:%d" % port_a:
            break
        assert time.monotonic() - back < 5, fwd.log_text(20)
        time.sleep(0.1)
    print("first upstream used again %.2f s after it came back" % (time.monotonic() - back))
    fwd.wait_event("upstream_up", service="svc", address="127.0.0.1:%d" % port_a)
    hs, _ = exchange_ok(fwd)
    assert hs["upstream"] == "127.0.0.1:%d" % port_a, hs     # priority: first again
    assert a.accepted >= 2


def test_blackholed_first_upstream_costs_only_the_first_client(pki, cleanup, service,
                                                              start_tlsfwd):
    port_a = syn_dropping_listener(cleanup)
    b = _tls_upstream(pki, cleanup)
    fwd = _start(start_tlsfwd, service, ["127.0.0.1:%d" % port_a, "127.0.0.1:%d" % b.port],
                 connect_timeout="1s")
    t0 = time.monotonic()
    hs, _ = exchange_ok(fwd)
    first = time.monotonic() - t0
    assert hs["upstream"] == "127.0.0.1:%d" % b.port and num(hs["attempts"]) == 2, hs
    assert 0.9 < first < 3, first
    times = []
    for _ in range(10):
        t0 = time.monotonic()
        hs, _ = exchange_ok(fwd)
        times.append(time.monotonic() - t0)
        assert num(hs["attempts"]) == 1, hs
    times.sort()
    print("first client %.3f s; then median %.4f s" % (first, times[len(times) // 2]))
    assert times[len(times) // 2] < 0.2, times


def _resetting_upstream(cleanup):
    def reset(conn):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01" + b"\x00" * 7)
        conn.close()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    s.settimeout(0.2)
    up = Upstream(reset, mode="raw", sock=s)
    cleanup.append(up)
    return up


@pytest.mark.parametrize("fault", ["bad_certificate", "reset"])
def test_failing_first_upstream_moves_every_client_on(fault, pki, cleanup, service,
                                                     start_tlsfwd):
    """The first upstream shows a certificate for another name, or accepts
    and resets: each client is served by the second (one handshake line, ok);
    the first's path is marked down, so later clients go to the second at once."""
    a = _tls_upstream(pki, cleanup, cert="wrong") if fault == "bad_certificate" \
        else _resetting_upstream(cleanup)
    b = _tls_upstream(pki, cleanup)
    fwd = _start(start_tlsfwd, service, ["127.0.0.1:%d" % a.port, "127.0.0.1:%d" % b.port])
    hs, _ = exchange_ok(fwd)
    assert (hs["result"], hs["upstream"], num(hs["attempts"])) == \
        ("ok", "127.0.0.1:%d" % b.port, 2), hs
    assert len(fwd.find("handshake", conn=hs["conn"])) == 1
    if fault == "bad_certificate":
        att = fwd.wait_event("attempt", conn=hs["conn"])
        assert (att["stage"], att["upstream"]) == ("verify", "127.0.0.1:%d" % a.port), att
    fwd.wait_event("upstream_down", address="127.0.0.1:%d" % a.port)
    for _ in range(5):
        hs, _ = exchange_ok(fwd)
        assert (hs["upstream"], num(hs["attempts"])) == ("127.0.0.1:%d" % b.port, 1), hs


def test_roundrobin_spreads_and_each_upstream_has_its_own_name(pki, cleanup, service,
                                                              start_tlsfwd, tmp_path):
    """localhost and wrong.example (both 127.0.0.1 by /etc/hosts), each with
    a certificate for its own name only: both verify, because each entry
    sends and verifies its own name; roundrobin alternates between them."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a private /etc/hosts")
    a = _tls_upstream(pki, cleanup)
    b = _tls_upstream(pki, cleanup, cert="wrong")
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n127.0.0.1 wrong.example\n")
    fwd = start_tlsfwd({"svc": service("localhost:%d, wrong.example:%d" % (a.port, b.port),
                                       balance="roundrobin")},
                       argv=with_hosts(str(hosts)))
    seen = []
    for _ in range(6):
        hs, _ = exchange_ok(fwd)
        seen.append((hs["sni"], hs["upstream"]))
    assert seen[0::2] == [("localhost", "127.0.0.1:%d" % a.port)] * 3, seen
    assert seen[1::2] == [("wrong.example", "127.0.0.1:%d" % b.port)] * 3, seen
    assert a.accepted == 3 and b.accepted == 3


def test_reload_keeps_the_health_of_unchanged_upstreams(pki, cleanup, service, start_tlsfwd):
    port_a = closed_port()
    b = _tls_upstream(pki, cleanup)
    fwd = _start(start_tlsfwd, service, ["127.0.0.1:%d" % port_a, "127.0.0.1:%d" % b.port])
    exchange_ok(fwd)
    t_down = time.monotonic()
    fwd.wait_event("upstream_down", service="svc")
    start, rec = fwd.reload()
    assert rec["result"] == "ok", rec
    hs, _ = exchange_ok(fwd)
    if time.monotonic() - t_down > 0.9:
        pytest.skip("too slow to check within the 1 s backoff")
    assert (hs["upstream"], num(hs["attempts"])) == ("127.0.0.1:%d" % b.port, 1), hs
