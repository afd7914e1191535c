"""An upstream name with several addresses (paths): connection racing
(RFC 8305) when the first path is blackholed, failover when it refuses,
resets or shows a bad certificate, passive health (a failed path is tried
last for a while, then once as a trial) and recovery.

The name is given by a private /etc/hosts (with_hosts: root and mount
namespaces) as ::1 first, then 127.0.0.1 (RFC 6724 sorts ::1 first), with
the same port on both, so the first path tried is the ::1 one."""

import os
import socket
import time

import pytest

from harness.clients import connect, exchange_ok, recv_closed, send_quiet
from harness.logfmt import num
from harness.namespaces import with_hosts
from harness.upstreams import echo_handler, server_context, syn_dropping_listener, Upstream

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a private /etc/hosts")


def _v4_listener():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    s.settimeout(0.2)
    return s


def _v6_listener(port, backlog=64):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        s.bind(("::1", port))
    except OSError as e:
        s.close()
        pytest.skip("cannot listen on [::1]:%d: %s" % (port, e))
    s.listen(backlog)
    s.settimeout(0.2)
    return s


def _good_v4(pki, cleanup):
    up = Upstream(echo_handler, ctx=server_context(pki["server"], pki["server_key"]),
                    sock=_v4_listener())
    cleanup.append(up)
    return up


def _start(start_tlsfwd, service, tmp_path, name, port, **over):
    hosts = tmp_path / "hosts"
    hosts.write_text("::1 %s\n127.0.0.1 %s\n" % (name, name))
    opts = dict(verify_hostname="localhost", connect_timeout="10s")
    opts.update(over)
    return start_tlsfwd({"svc": service("%s:%d" % (name, port), **opts)},
                        {"log_level": "debug"}, argv=with_hosts(str(hosts)))


def test_blackholed_first_address_is_raced_not_waited_for(pki, cleanup, service, start_tlsfwd,
                                                          tmp_path):
    """connect_timeout = 10s and ::1 drops SYNs: the first connection gets
    through on 127.0.0.1 about 250 ms later (the race delay), not after 10 s;
    the ::1 path is then marked down, so the next connections go straight to
    127.0.0.1 (attempts=1)."""
    good = _good_v4(pki, cleanup)
    syn_dropping_listener(cleanup, "::1", good.port)
    fwd = _start(start_tlsfwd, service, tmp_path, "race.test", good.port)
    times = []
    for i in range(5):
        t0 = time.monotonic()
        hs, _ = exchange_ok(fwd)
        times.append(time.monotonic() - t0)
        assert hs["upstream"] == "127.0.0.1:%d" % good.port, hs
        if i == 0:
            assert num(hs["attempts"]) == 2, hs
            assert 200 <= num(hs["connect_ms"]) < 1000, hs
        else:
            assert num(hs["attempts"]) == 1, hs
    assert max(times) < 1.0, times
    down = fwd.wait_event("upstream_down", service="svc", address="[::1]:%d" % good.port)
    assert down["level"] == "warn" and "250 ms" in down["error"], down


def test_refused_first_address_fails_over_and_recovers(pki, cleanup, service, start_tlsfwd,
                                                       tmp_path):
    """::1 refuses: every client is served by 127.0.0.1; the refusal marks
    ::1 down (event=upstream_down) so later connections try 127.0.0.1 first;
    once ::1 listens again, the trial after the 1 s backoff finds it and it
    is up again (event=upstream_up) and used first."""
    good = _good_v4(pki, cleanup)
    fwd = _start(start_tlsfwd, service, tmp_path, "fo.test", good.port)
    first, _ = exchange_ok(fwd)
    assert first["upstream"] == "127.0.0.1:%d" % good.port and num(first["attempts"]) == 2, first
    fwd.wait_event("upstream_down", service="svc", address="[::1]:%d" % good.port)
    for _ in range(3):
        hs, _ = exchange_ok(fwd)
        assert num(hs["attempts"]) == 1 and hs["upstream"].startswith("127.0.0.1:"), hs
    v6 = Upstream(echo_handler, ctx=server_context(pki["server"], pki["server_key"]),
                    sock=_v6_listener(good.port))
    cleanup.append(v6)
    back_at = time.monotonic()
    up = None
    while time.monotonic() - back_at < 5:
        hs, _ = exchange_ok(fwd)
        if hs["upstream"] == "[::1]:%d" % good.port:
            up = fwd.wait_event("upstream_up", service="svc", address="[::1]:%d" % good.port)
            break
        time.sleep(0.1)
    assert up is not None, fwd.log_text(30)
    assert time.monotonic() - back_at < 2.5
    hs, _ = exchange_ok(fwd)
    assert hs["upstream"] == "[::1]:%d" % good.port and num(hs["attempts"]) == 1, hs


def test_bad_certificate_on_first_address_moves_on(pki, cleanup, service, start_tlsfwd,
                                                   tmp_path):
    """::1 shows a certificate for another name: that path's verification
    failure is an event=attempt line at warn, the client is served by
    127.0.0.1 (one handshake line: ok, attempts=2), and the next clients go
    to 127.0.0.1 first."""
    good = _good_v4(pki, cleanup)
    bad = Upstream(echo_handler, ctx=server_context(pki["wrong"], pki["wrong_key"]),
                     sock=_v6_listener(good.port))
    cleanup.append(bad)
    fwd = _start(start_tlsfwd, service, tmp_path, "cert.test", good.port)
    hs, _ = exchange_ok(fwd)
    assert (hs["result"], hs["upstream"], num(hs["attempts"])) == \
        ("ok", "127.0.0.1:%d" % good.port, 2), hs
    att = fwd.wait_event("attempt", service="svc", conn=hs["conn"])
    assert (att["level"], att["result"], att["stage"], att["upstream"]) == \
        ("warn", "fail", "verify", "[::1]:%d" % good.port), att
    assert len(fwd.find("handshake", conn=hs["conn"])) == 1
    hs2, _ = exchange_ok(fwd)
    assert num(hs2["attempts"]) == 1, hs2


def test_reset_during_handshake_on_first_address_moves_on(pki, cleanup, service, start_tlsfwd,
                                                          tmp_path):
    """::1 accepts and resets at once (before or during the handshake): the
    clients are still served, and the ::1 path is marked down."""
    good = _good_v4(pki, cleanup)

    def reset(conn):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()

    rst = Upstream(reset, mode="raw", sock=_v6_listener(good.port))
    cleanup.append(rst)
    fwd = _start(start_tlsfwd, service, tmp_path, "rst.test", good.port)
    for _ in range(3):
        hs, _ = exchange_ok(fwd)
        assert hs["upstream"] == "127.0.0.1:%d" % good.port, hs
    down = fwd.wait_event("upstream_down", service="svc", address="[::1]:%d" % good.port)
    assert down["level"] == "warn", down


def test_every_path_failing_still_fails_the_client_once(pki, cleanup, service, start_tlsfwd,
                                                       tmp_path):
    """Both paths show a bad certificate: one event=attempt line for the
    first, and one handshake line (result=fail stage=verify attempts=2) and
    one close line for the client; nothing is relayed."""
    bad4 = Upstream(echo_handler, ctx=server_context(pki["wrong"], pki["wrong_key"]),
                      sock=_v4_listener())
    cleanup.append(bad4)
    bad6 = Upstream(echo_handler, ctx=server_context(pki["wrong"], pki["wrong_key"]),
                      sock=_v6_listener(bad4.port))
    cleanup.append(bad6)
    fwd = _start(start_tlsfwd, service, tmp_path, "twobad.test", bad4.port)
    s = connect(fwd.ports["svc"])
    try:
        send_quiet(s, b"secret")
        data, _ = recv_closed(s)
        hs = fwd.conn_of(s)
    finally:
        s.close()
    assert data == b"", data
    assert (hs["result"], hs["stage"], num(hs["attempts"])) == ("fail", "verify", 2), hs
    assert len(fwd.find("attempt", conn=hs["conn"])) == 1
    cl = fwd.wait_close(hs["conn"])
    assert cl["reason"] == "handshake_failed" and num(cl["bytes_up"]) == 0, cl
