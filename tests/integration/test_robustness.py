"""Flow control, clients that vanish, connection churn, IPv6.

These matter most under the ASan+UBSan build: every tlsfwd is SIGTERMed at
teardown and its stderr checked for sanitizer and leak reports."""

import hashlib
import socket
import struct
import threading

import pytest

from harness.clients import recv_all, recv_closed, recv_exact, send_quiet
from harness.daemon import wait_count
from harness.data import det_chunks, det_digest, wait_stalled
from harness.logfmt import num
from harness.procfs import rss_kib
from harness.upstreams import BioConn, refusing_port, echo_handler

SIZE = 64 << 20


def test_backpressure_client_not_reading(ssl_upstream, service, start_tlsfwd, client,
                                         rss_limit_kib):
    """A client that does not read must stall the upstream, not fill tlsfwd's memory."""
    progress = [0]

    def source(bc):
        for chunk in det_chunks("bp-down", SIZE):
            for off in range(0, len(chunk), 1 << 16):
                bc.send(chunk[off:off + (1 << 16)])
                progress[0] += 1 << 16
        bc.send_close_notify()
        return progress[0]

    up = ssl_upstream(source, mode="bio")
    fwd = start_tlsfwd({"svc": service(up.port)})
    base = rss_kib(fwd.proc.pid)
    s = client(fwd, timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    stalled = wait_stalled(lambda: progress[0], SIZE)
    grown = rss_kib(fwd.proc.pid) - base
    assert stalled < SIZE, "upstream was never held back: tlsfwd read all %d bytes" % SIZE
    assert grown < rss_limit_kib, "tlsfwd RSS grew by %d KiB while the client did not read" % grown

    h = hashlib.sha256()
    n = 0
    while True:
        d = s.recv(1 << 18)
        if not d:
            break
        h.update(d)
        n += len(d)
    assert n == SIZE and h.hexdigest() == det_digest("bp-down", SIZE)
    assert up.result(30) == SIZE
    s.shutdown(socket.SHUT_WR)
    cl = fwd.wait_close(fwd.conn_of(s)["conn"])
    assert cl["reason"] == "done" and num(cl["bytes_down"]) == SIZE, cl


def test_backpressure_upstream_not_reading(ssl_upstream, service, start_tlsfwd, client,
                                           rss_limit_kib):
    """An upstream that does not read must stall the client, not fill tlsfwd's memory."""
    go = threading.Event()

    def sink(bc):
        assert go.wait(30)
        data = bc.recv_until_eof()
        bc.send_close_notify()
        return len(data), hashlib.sha256(data).hexdigest()

    up = ssl_upstream(sink, mode="bio")
    fwd = start_tlsfwd({"svc": service(up.port)})
    base = rss_kib(fwd.proc.pid)
    s = client(fwd, timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)
    sent = [0]
    err = []

    def sender():
        try:
            for chunk in det_chunks("bp-up", SIZE):
                for off in range(0, len(chunk), 1 << 16):
                    s.sendall(chunk[off:off + (1 << 16)])
                    sent[0] += 1 << 16
            s.shutdown(socket.SHUT_WR)
        except Exception as e:  # noqa: BLE001
            err.append(e)

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    try:
        stalled = wait_stalled(lambda: sent[0], SIZE)
        grown = rss_kib(fwd.proc.pid) - base
    finally:
        go.set()
    assert stalled < SIZE, "client was never held back: tlsfwd took all %d bytes" % SIZE
    assert grown < rss_limit_kib, "tlsfwd RSS grew by %d KiB while the upstream did not read" % grown
    t.join(60)
    assert not err, err
    n, digest = up.result(60)
    assert n == SIZE and digest == det_digest("bp-up", SIZE)
    assert recv_all(s) == b""
    cl = fwd.wait_close(fwd.conn_of(s)["conn"])
    assert cl["reason"] == "done" and num(cl["bytes_up"]) == SIZE, cl


def test_client_gone_during_handshake(silent_upstream, service, start_tlsfwd, client):
    up = silent_upstream()
    fwd = start_tlsfwd({"svc": service(up.port, handshake_timeout="500ms")})
    s = client(fwd)
    port = s.getsockname()[1]
    s.close()
    hs = fwd.wait_for(lambda r: r.get("event") == "handshake"
                      and r.get("client") == "127.0.0.1:%d" % port, 5)[1]
    assert hs["result"] != "ok", hs
    fwd.wait_close(hs["conn"], 5)


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_client_gone_right_after_connect(how, ssl_upstream, service, start_tlsfwd, client):
    up = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service(up.port)})
    s = client(fwd)
    port = s.getsockname()[1]
    if how == "rst":
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    hs = fwd.wait_for(lambda r: r.get("event") == "handshake"
                      and r.get("client") == "127.0.0.1:%d" % port, 5)[1]
    cl = fwd.wait_close(hs["conn"], 5)
    assert num(cl["bytes_up"]) == 0 and num(cl["bytes_down"]) == 0, cl


def test_connection_churn(ssl_upstream, openssl_server, service, start_tlsfwd, client):
    up = ssl_upstream(echo_handler)
    bad = ssl_upstream(echo_handler, cert="untrusted")
    fwd = start_tlsfwd({"ok": service(up.port),
                        "refused": service(refusing_port()),
                        "untrusted": service(bad.port)})
    n = 0
    for i in range(25):
        for name in ("ok", "refused", "untrusted"):
            s = client(fwd, name)
            if name == "ok":
                s.sendall(b"%d" % i)
                assert recv_exact(s, len(b"%d" % i)) == b"%d" % i
                s.shutdown(socket.SHUT_WR)
                assert recv_all(s) == b""
            else:
                send_quiet(s, b"x")
                assert recv_closed(s)[0] == b""
            s.close()
            n += 1
    closes = wait_count(fwd, "close", n)
    reasons = sorted({(c["service"], c["reason"]) for c in closes})
    assert reasons == [("ok", "done"), ("refused", "handshake_failed"),
                       ("untrusted", "handshake_failed")], reasons
    assert len(fwd.find("handshake")) == n


def test_ipv6_listen_and_upstream(openssl_server, service, start_tlsfwd):
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback")
    srv = openssl_server("server", "-www")          # s_server listens on [::]
    fwd = start_tlsfwd({"v6": service("[::1]:%d" % srv.port, listen="[::1]:0",
                                      sni="localhost")})
    assert fwd.listen["v6"].startswith("[::1]:"), fwd.listen
    s = socket.create_connection(("::1", fwd.ports["v6"]), timeout=10)
    fwd.clients.append(s)
    s.settimeout(10)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    assert recv_all(s).startswith(b"HTTP/1.0 200 ok")
    s.shutdown(socket.SHUT_WR)
    hs = fwd.wait_handshake("v6")
    assert hs["upstream"] == "[::1]:%d" % srv.port, hs
    assert hs["client"] == "[::1]:%d" % s.getsockname()[1], hs
    assert (hs["result"], hs["verify"], hs["sni"]) == ("ok", "ok", "localhost"), hs
    assert fwd.wait_close(hs["conn"])["reason"] == "done"


def test_client_reset_while_receiving(ssl_upstream, service, start_tlsfwd, client):
    """The client resets while tlsfwd is writing to it: EPIPE/ECONNRESET, no SIGPIPE death."""
    def source(bc):
        try:
            for chunk in det_chunks("reset", SIZE):
                bc.send(chunk)
        except (OSError, BioConn.TruncatedError):
            return "stopped"
        return "sent all"

    up = ssl_upstream(source, mode="bio")
    fwd = start_tlsfwd({"svc": service(up.port)})
    s = client(fwd)
    recv_exact(s, 1 << 20)
    hs = fwd.conn_of(s)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    cl = fwd.wait_close(hs["conn"])
    assert cl["reason"] == "client_error", cl
    assert cl.get("errno") in ("ECONNRESET", "EPIPE"), cl
    assert up.result() == "stopped"
    assert fwd.proc.poll() is None
    s2 = client(fwd)                       # still serving
    recv_exact(s2, 1000)


def test_upstream_reset_while_relaying(ssl_upstream, service, start_tlsfwd, client):
    def reset(bc):
        req = bc.recv()
        bc.raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        bc.close()                         # RST
        return req

    up = ssl_upstream(reset, mode="bio")
    fwd = start_tlsfwd({"svc": service(up.port)})
    s = client(fwd)
    s.sendall(b"hello")
    assert up.result() == b"hello"
    data, _ = recv_closed(s)
    assert data == b""
    cl = fwd.wait_close(fwd.conn_of(s)["conn"])
    assert cl["reason"] == "upstream_error", cl
    assert cl.get("errno") == "ECONNRESET" or cl.get("gnutls_error"), cl
    assert cl["level"] == "warn"
