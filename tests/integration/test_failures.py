"""Failures on the way to the upstream: refused addresses, timeouts, alerts,
protocol errors, truncation, resets, idle connections.

An upstream that refuses the connection, accepts and stays silent, answers in
plaintext, or drops TCP without close_notify mid-answer: rows of
test_upstream_fault in test_fault_matrix.py, which checks every field of
the log lines."""

import os
import socket
import ssl
import struct
import time

import pytest

from harness.clients import recv_all, recv_closed, recv_exact, send_quiet
from harness.logfmt import num
from harness.namespaces import with_hosts
from harness.upstreams import echo_handler, server_context, syn_dropping_listener, Upstream
from harness.wrapper import SLOW

FAST = {"connect_timeout": "500ms", "handshake_timeout": "500ms"}


def closed_after(s, send=b"hello"):
    """Send, then wait for the close; return (data, how, seconds since connect-ish)."""
    t0 = time.monotonic()
    if send:
        send_quiet(s, send)
    data, how = recv_closed(s)
    return data, how, time.monotonic() - t0


def test_refused_first_address_leaves_no_errno_on_a_later_failure(pki, cleanup, service,
                                                                 start_tlsfwd, client, tmp_path):
    """An upstream name with two addresses: ::1 refuses, 127.0.0.1 answers with
    a certificate for another name. The handshake line is the verification
    failure of the address that answered, without the refusal's errno (it
    said errno=ECONNREFUSED: Debian's localhost is ::1, then 127.0.0.1)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a private /etc/hosts")
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.bind(("127.0.0.1", 0))
    raw.listen(8)
    raw.settimeout(0.2)
    up = Upstream(echo_handler, ctx=server_context(pki["server"], pki["server_key"]),
                    sock=raw)
    cleanup.append(up)
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 two.test\n::1 two.test\n")
    fwd = start_tlsfwd({"svc": service("two.test:%d" % up.port)}, {"log_level": "debug"},
                       argv=with_hosts(str(hosts)))
    s = client(fwd)
    data, _, _ = closed_after(s)
    assert data == b""
    hs = fwd.conn_of(s)
    # the refused ::1 was tried first (IPv6 sorts first: RFC 6724)
    tried = [r for r in fwd.find("connect") if "[::1]:%d" % up.port in r.get("msg", "")]
    assert tried, fwd.log_text()
    assert (hs["result"], hs["stage"], hs["verify"]) == ("fail", "verify", "fail"), hs
    assert hs["upstream"] == "127.0.0.1:%d" % up.port, hs
    assert "errno" not in hs, hs
    assert "does not match" in hs.get("error", ""), hs


def test_upstream_connect_timeout(service, start_tlsfwd, client, cleanup):
    port = syn_dropping_listener(cleanup)
    fwd = start_tlsfwd({"svc": service(port, **FAST)})
    s = client(fwd)
    data, _, elapsed = closed_after(s)
    assert data == b""
    assert elapsed >= 0.45, "closed before connect_timeout (%.2fs)" % elapsed
    assert elapsed < 3.0, "connect_timeout=500ms took %.2fs" % elapsed
    hs = fwd.conn_of(s)
    assert (hs["result"], hs["stage"], hs["timeout"]) == ("fail", "timeout", "connect"), hs
    assert fwd.wait_close(hs["conn"])["reason"] == "handshake_failed"


def test_handshake_timeout_is_for_the_whole_handshake(raw_upstream, service, start_tlsfwd,
                                                      client):
    """An upstream that keeps trickling bytes of a huge record must still time out."""
    def trickle(raw):
        raw.recv(65536)                               # the ClientHello
        raw.sendall(b"\x16\x03\x03\x40\x00")          # handshake record of 16 KiB...
        for _ in range(60):                           # ...arriving 1 byte per 100 ms
            time.sleep(0.1)
            try:
                raw.sendall(b"\x00")
            except OSError:
                return
    up = raw_upstream(trickle)
    fwd = start_tlsfwd({"svc": service(up.port, **FAST)})
    s = client(fwd)
    data, _, elapsed = closed_after(s)
    assert data == b""
    assert 0.45 <= elapsed < 3.0, "handshake_timeout=500ms, closed after %.2fs" % elapsed
    hs = fwd.conn_of(s)
    assert (hs["result"], hs["stage"], hs["timeout"]) == ("fail", "timeout", "handshake"), hs


def test_idle_timeout(ssl_upstream, service, start_tlsfwd, client):
    # 500 ms, times TLSFWD_SLOW under make valgrind: the echo must come back
    # before the limit, and memcheck on a busy machine can take longer.
    idle_ms = int(500 * SLOW)
    up = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service(up.port, idle_timeout="%dms" % idle_ms)})
    s = client(fwd)
    s.sendall(b"ping")
    assert recv_exact(s, 4) == b"ping"
    t0 = time.monotonic()
    data, how = recv_closed(s)
    elapsed = time.monotonic() - t0
    assert (data, how) == (b"", "eof")
    assert elapsed >= 0.9 * idle_ms / 1000, "closed before idle_timeout (%.2fs)" % elapsed
    assert elapsed < 6 * idle_ms / 1000, "idle_timeout=%dms took %.2fs" % (idle_ms, elapsed)
    hs = fwd.conn_of(s)
    assert hs["result"] == "ok"
    cl = fwd.wait_close(hs["conn"])
    assert cl["reason"] == "idle_timeout", cl
    assert cl["level"] == "warn", cl
    assert num(cl["duration_ms"]) >= 0.9 * idle_ms, cl
    assert (num(cl["bytes_up"]), num(cl["bytes_down"])) == (4, 4), cl


def test_traffic_resets_idle_timer(ssl_upstream, service, start_tlsfwd, client):
    up = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service(up.port, idle_timeout="600ms")})
    s = client(fwd)
    for i in range(8):               # 1.6 s of traffic, never 600 ms of silence
        s.sendall(b"%d" % i)
        assert recv_exact(s, 1) == b"%d" % i
        time.sleep(0.2)
    assert not fwd.find("close"), "closed although bytes kept moving: %s" % fwd.find("close")
    s.shutdown(socket.SHUT_WR)
    assert recv_all(s) == b""
    cl = fwd.wait_close(fwd.conn_of(s)["conn"])
    assert cl["reason"] == "done", cl


def test_upstream_alert_during_handshake(ssl_upstream, pki, service, start_tlsfwd, client):
    """TLS 1.2 server demanding a client certificate: OpenSSL answers the empty
    Certificate with a fatal handshake_failure alert before its Finished."""
    up = ssl_upstream(echo_handler, max_version=ssl.TLSVersion.TLSv1_2,
                      client_ca=pki["ca"])
    fwd = start_tlsfwd({"svc": service("localhost:%d" % up.port)})
    s = client(fwd)
    data, _, _ = closed_after(s)
    assert data == b""
    hs = fwd.conn_of(s)
    assert hs["level"] == "warn", hs
    assert hs["result"] == "alert", hs
    assert hs["alert_from"] == "upstream", hs
    assert hs["alert"] == "handshake_failure", hs
    assert fwd.wait_close(hs["conn"])["reason"] == "handshake_failed"
    assert up.wait_handshake_error()


def test_raw_alert_from_upstream(raw_upstream, service, start_tlsfwd, client):
    """An upstream answering the ClientHello with a bare fatal protocol_version alert."""
    def alerter(raw):
        hdr = recv_exact(raw, 5)
        recv_exact(raw, struct.unpack("!H", hdr[3:5])[0])
        raw.sendall(b"\x15\x03\x03\x00\x02\x02\x46")   # fatal(2) protocol_version(70)
        recv_closed(raw)
    up = raw_upstream(alerter)
    fwd = start_tlsfwd({"svc": service(up.port)})
    s = client(fwd)
    data, _, _ = closed_after(s)
    assert data == b""
    hs = fwd.conn_of(s)
    assert (hs["result"], hs["alert_from"], hs["alert"]) == \
        ("alert", "upstream", "protocol_version"), hs


def test_upstream_closes_during_handshake(raw_upstream, service, start_tlsfwd, client):
    def hangup(raw):
        raw.recv(65536)
        raw.shutdown(socket.SHUT_WR)
        recv_closed(raw)
    up = raw_upstream(hangup)
    fwd = start_tlsfwd({"svc": service(up.port)})
    s = client(fwd)
    data, _, _ = closed_after(s)
    assert data == b""
    hs = fwd.conn_of(s)
    assert (hs["result"], hs["stage"]) == ("fail", "handshake"), hs
    assert hs.get("gnutls_error") or hs.get("errno"), hs
    assert hs.get("error"), hs


def test_tls13_client_cert_refusal_is_a_handshake_failure(ssl_upstream, pki, service,
                                                          start_tlsfwd, client):
    """TLS 1.3 server demanding a client certificate: the client side of the
    handshake completes, then the upstream sends certificate_required. tlsfwd
    waits for that verdict, so the handshake line reports the refusal."""
    up = ssl_upstream(echo_handler, min_version=ssl.TLSVersion.TLSv1_3, client_ca=pki["ca"])
    fwd = start_tlsfwd({"svc": service("localhost:%d" % up.port)})
    s = client(fwd)
    data, how = recv_closed(s)
    assert data == b""
    hs = fwd.conn_of(s)
    assert hs["result"] == "alert" and hs["stage"] == "handshake", hs
    assert hs["alert"] == "certificate_required" and hs["alert_from"] == "upstream", hs
    assert hs["level"] == "warn", hs
    cl = fwd.wait_close(hs["conn"])
    assert cl["reason"] == "handshake_failed", cl
    assert cl["level"] == "warn", cl


def test_client_reset(ssl_upstream, service, start_tlsfwd, client):
    up = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service(up.port)})
    s = client(fwd)
    s.sendall(b"abc")
    assert recv_exact(s, 3) == b"abc"
    hs = fwd.conn_of(s)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()                          # RST
    cl = fwd.wait_close(hs["conn"])
    assert cl["reason"] == "client_error", cl
    assert cl["errno"] == "ECONNRESET", cl
    assert cl["level"] == "warn", cl


def test_unresolvable_upstream(service, start_tlsfwd, client):
    fwd = start_tlsfwd({"svc": service("nonexistent.invalid:443", **FAST)})
    res = fwd.wait_event("resolve", service="svc")
    assert res["level"] == "warn" and res.get("error"), res
    s = client(fwd)
    data, _, elapsed = closed_after(s)
    assert data == b""
    hs = fwd.conn_of(s)
    assert (hs["result"], hs["stage"], hs["upstream"]) == ("fail", "resolve", "-"), hs


def test_silent_hangup_after_our_close_notify_is_not_truncation(ssl_upstream, service,
                                                                start_tlsfwd, client):
    """The client leaves without a byte; tlsfwd sends close_notify; the upstream
    (like nginx) hangs up without one. Nothing was lost: reason=done, not
    upstream_truncated (health checks do exactly this)."""
    def hang_up(bc):
        assert bc.recv() == b""            # our close_notify
        bc.close()                         # TCP close, no close_notify back
        return bc.got_close_notify
    up = ssl_upstream(hang_up, mode="bio")
    fwd = start_tlsfwd({"svc": service(up.port)})
    s = client(fwd)
    hs = fwd.wait_event("handshake", 5, service="svc")
    assert hs["result"] == "ok", hs
    s.shutdown(socket.SHUT_WR)
    assert recv_all(s) == b""
    assert up.result() is True
    cl = fwd.wait_close(hs["conn"])
    assert cl["reason"] == "done" and cl["level"] == "info", cl
    assert cl.get("close_notify") == "no", cl


def _answer_then_hang_up(bc):
    """Answers each request; when the client has finished (our close_notify),
    hangs up without one, as redis-server does."""
    while True:
        req = bc.recv()
        if req == b"":
            bc.close()
            return "hung up"
        bc.send(b"+" + req)


def test_hangup_after_the_client_finished_is_done_with_close_notify_no(
        ssl_upstream, service, start_tlsfwd, client):
    """Request, answer, then the client closes; the upstream answers our
    close_notify by closing TCP. The client had all it asked for: reason=done
    at info with close_notify=no (redis-server on every connection)."""
    up = ssl_upstream(_answer_then_hang_up, mode="bio")
    fwd = start_tlsfwd({"svc": service(up.port)})
    s = client(fwd)
    s.sendall(b"PING")
    assert recv_exact(s, 5) == b"+PING"
    s.shutdown(socket.SHUT_WR)
    assert recv_all(s) == b""
    assert up.result() == "hung up"
    cl = fwd.wait_close(fwd.conn_of(s)["conn"])
    assert (cl["reason"], cl["level"], cl.get("close_notify")) == ("done", "info", "no"), cl
    assert (num(cl["bytes_up"]), num(cl["bytes_down"])) == (4, 5), cl


def test_hangup_after_bytes_that_followed_the_clients_end_is_truncation(
        ssl_upstream, service, start_tlsfwd, client):
    """HTTP/1.0 style: the client sends its request and its end at once, then
    reads the answer to EOF. The upstream answers after that end and closes
    without close_notify: the answer may have been cut, so upstream_truncated."""
    def answer_after_end(bc):
        req = bc.recv()
        assert bc.recv() == b""            # the client's end, as close_notify
        bc.send(b"answer to " + req)
        bc.close()                         # no close_notify
        return req
    up = ssl_upstream(answer_after_end, mode="bio")
    fwd = start_tlsfwd({"svc": service(up.port)})
    s = client(fwd)
    s.sendall(b"GET")
    s.shutdown(socket.SHUT_WR)
    assert recv_all(s) == b"answer to GET"
    assert up.result() == b"GET"
    cl = fwd.wait_close(fwd.conn_of(s)["conn"])
    assert (cl["reason"], cl["level"]) == ("upstream_truncated", "warn"), cl
    assert "close_notify" not in cl, cl
