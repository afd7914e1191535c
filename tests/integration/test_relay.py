"""Relaying: bytes identical both ways, large transfers, many connections,
unix-socket listeners, SNI and certificate chains."""

import hashlib
import re
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness.clients import connect, connect_unix, recv_all, recv_exact
from harness.daemon import wait_count
from harness.data import det_bytes, det_chunks, det_digest
from harness.logfmt import num
from harness.upstreams import echo_handler, make_duplex_handler, resolve_first
from harness.wrapper import SLOW


def assert_ok_handshake(hs, port, sni="localhost", service="svc"):
    assert hs["level"] == "info", hs
    assert hs["service"] == service, hs
    assert hs["result"] == "ok", hs
    assert hs["version"] in ("TLS1.3", "TLS1.2"), hs
    assert hs["cipher"] not in ("", "-"), hs
    assert hs["verify"] == "ok", hs
    assert "CN=localhost" in hs["peer"], hs
    assert "tlsfwd Test Root CA" in hs["issuer"], hs
    assert hs["sni"] == sni, hs
    assert hs["upstream"] == resolve_first("localhost", port), hs
    assert hs["resumed"] in ("yes", "no"), hs
    assert "group" in hs and "alpn" in hs, hs
    assert "stage" not in hs and "error" not in hs, hs
    assert 0 <= num(hs["connect_ms"]) < 5000, hs
    assert 0 <= num(hs["handshake_ms"]) < 5000, hs
    assert int(hs["conn"]) >= 0


# io_collect_interval (default 20us) only changes how often the loop polls:
# off, default and its largest value relay the same bytes.
@pytest.mark.parametrize("collect", [None, "0us", "10ms"])
def test_echo_roundtrip_bytes_identical(collect, ssl_upstream, service, start_tlsfwd, client):
    up = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service("localhost:%d" % up.port)},
                       {"io_collect_interval": collect} if collect else None)
    s = client(fwd)
    msgs = [b"hello\n", bytes(range(256)) * 4, det_bytes("echo", 300000), b"\r\n\x00end"]
    for m in msgs:
        s.sendall(m)
        assert recv_exact(s, len(m)) == m
    total = sum(map(len, msgs))
    s.shutdown(socket.SHUT_WR)
    assert recv_all(s) == b""          # upstream's close_notify -> EOF at the client
    assert up.result() == total
    assert not up.errors

    hs = fwd.conn_of(s)
    assert_ok_handshake(hs, up.port)
    cl = fwd.wait_close(hs["conn"])
    assert cl["service"] == "svc"
    assert cl["reason"] == "done", cl
    assert cl["level"] == "info", cl
    assert cl["client"] == hs["client"] and cl["upstream"] == hs["upstream"]
    assert num(cl["bytes_up"]) == total, cl
    assert num(cl["bytes_down"]) == total, cl
    assert num(cl["duration_ms"]) >= 0


def test_lone_connection_is_not_paced_by_io_collect_interval(ssl_upstream, service,
                                                             start_tlsfwd, client):
    """Collecting starts only when polls find many events at once: one
    connection's round trips do not each wait out the interval (10ms here,
    so 50 paced round trips would take over 1 s: two waits each)."""
    up = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service("localhost:%d" % up.port)},
                       {"io_collect_interval": "10ms"})
    s = client(fwd)
    s.sendall(b"warm-up\n")
    assert recv_exact(s, 8) == b"warm-up\n"
    t0 = time.monotonic()
    for i in range(50):
        m = b"%04d\n" % i
        s.sendall(m)
        assert recv_exact(s, len(m)) == m
    elapsed = time.monotonic() - t0
    assert elapsed < 0.25 * SLOW, "50 round trips took %.3f s" % elapsed
    s.close()


def test_openssl_www_request_response(openssl_server, service, start_tlsfwd, client):
    srv = openssl_server("server", "-www")
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port)})
    s = client(fwd)
    req = b"GET / HTTP/1.0\r\n\r\n"
    s.sendall(req)
    page = recv_all(s)
    s.shutdown(socket.SHUT_WR)     # like an HTTP/1.0 client: done once the response ended
    assert page.startswith(b"HTTP/1.0 200 ok\r\n"), page[:200]
    assert page.rstrip().endswith(b"</BODY></HTML>"), page[-200:]

    hs = fwd.conn_of(s)
    assert_ok_handshake(hs, srv.port)
    # the page names the session s_server negotiated: it must be what tlsfwd logged
    m = re.search(rb"New, (TLSv1\.[23]), Cipher is (\S+)", page)
    assert m, page
    assert m.group(1).decode().replace("TLSv", "TLS") == hs["version"]
    ossl = m.group(2).decode().upper()          # e.g. TLS_AES_256_GCM_SHA384
    core = re.sub(r"^TLS_|_SHA\d+$", "", ossl).replace("_", "-")
    assert core in hs["cipher"].upper().replace("_", "-"), (ossl, hs["cipher"])

    cl = fwd.wait_close(hs["conn"])
    assert cl["reason"] == "done", cl
    assert num(cl["bytes_up"]) == len(req)
    assert num(cl["bytes_down"]) == len(page)


def test_openssl_rev_line_protocol(openssl_server, service, start_tlsfwd, client):
    srv = openssl_server("server", "-rev")
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port)})
    s = client(fwd)
    sent = recv = 0
    for line, want in [(b"hello world\n", b"dlrow olleh\n"), (b"tlsfwd 123\n", b"321 dwfslt\n")]:
        s.sendall(line)
        assert recv_exact(s, len(want)) == want
        sent += len(line)
        recv += len(want)
    s.shutdown(socket.SHUT_WR)
    assert recv_all(s) == b""
    cl = fwd.wait_close(fwd.conn_of(s)["conn"])
    assert cl["reason"] == "done", cl
    assert (num(cl["bytes_up"]), num(cl["bytes_down"])) == (sent, recv)


def test_64mib_each_way_concurrently(ssl_upstream, service, start_tlsfwd, client):
    size = 64 << 20
    up = ssl_upstream(make_duplex_handler("down-seed", size), mode="bio")
    fwd = start_tlsfwd({"svc": service("localhost:%d" % up.port)})
    s = client(fwd, timeout=60)

    send_err = []

    def sender():
        try:
            for chunk in det_chunks("up-seed", size):
                s.sendall(chunk)
            s.shutdown(socket.SHUT_WR)
        except Exception as e:  # noqa: BLE001
            send_err.append(e)

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    h = hashlib.sha256()
    got = 0
    while True:
        d = s.recv(1 << 18)
        if not d:
            break
        h.update(d)
        got += len(d)
    t.join(60)
    assert not t.is_alive() and not send_err, send_err
    assert got == size
    assert h.hexdigest() == det_digest("down-seed", size), "upstream->client data differs"
    up_got, up_digest = up.result(30)
    assert not up.errors, up.errors
    assert up_got == size
    assert up_digest == det_digest("up-seed", size), "client->upstream data differs"

    cl = fwd.wait_close(fwd.conn_of(s)["conn"])
    assert cl["reason"] == "done", cl
    assert num(cl["bytes_up"]) == size, cl
    assert num(cl["bytes_down"]) == size, cl


@pytest.mark.parametrize("count,size,rcvbuf", [(5, 1, 0), (100, 10, 0), (2000, 100, 4096)])
def test_burst_of_small_records_in_one_write(count, size, rcvbuf, ssl_upstream, service,
                                             start_tlsfwd, client):
    """The upstream writes many small TLS records with one send() and then
    waits, socket open: tlsfwd reads them ahead of GnuTLS in one recv() and
    must deliver every one though the socket then stays silent (no fd event
    announces bytes already read), also past its per-event record limit and
    while the client, not reading yet, holds it back."""
    records = [(b"%06d" % i + b"." * size)[:max(size, 7)] for i in range(count)]
    want = b"".join(records)

    def handler(conn):
        for r in records:
            conn.obj.write(r)
        conn._flush()               # all records in one sendall
        return conn.recv()          # stays open until the client's bytes

    up = ssl_upstream(handler, mode="bio")
    fwd = start_tlsfwd({"svc": service("localhost:%d" % up.port)})
    s = client(fwd, timeout=20)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    assert recv_exact(s, len(want)) == want
    s.sendall(b"bye")
    assert up.result(10) == b"bye"
    assert recv_all(s) == b""
    s.shutdown(socket.SHUT_WR)
    cl = fwd.wait_close(fwd.conn_of(s)["conn"])
    assert num(cl["bytes_down"]) == len(want), cl


def test_200_concurrent_connections(ssl_upstream, service, start_tlsfwd):
    n = 200
    up = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service("localhost:%d" % up.port)})
    port = fwd.ports["svc"]
    barrier = threading.Barrier(n, timeout=60)
    clients = {}

    def one(i):
        s = connect(port, timeout=60)
        try:
            clients[i] = "127.0.0.1:%d" % s.getsockname()[1]
            msg = det_bytes("conn-%d" % i, 2000 + 37 * i)
            s.sendall(msg)
            echoed = recv_exact(s, len(msg))
            barrier.wait()                 # all 200 relays are open at the same time
            s.shutdown(socket.SHUT_WR)
            rest = recv_all(s)
            return echoed == msg and rest == b"", len(msg)
        finally:
            s.close()

    with ThreadPoolExecutor(n) as ex:
        results = list(ex.map(one, range(n)))
    assert all(ok for ok, _ in results), [i for i, (ok, _) in enumerate(results) if not ok]

    closes = wait_count(fwd, "close", n, timeout=30)
    hss = fwd.find("handshake")
    assert len(hss) == n and len(closes) == n
    assert all(h["result"] == "ok" and h["verify"] == "ok" for h in hss)
    assert len({h["conn"] for h in hss}) == n, "conn ids are not unique"
    assert sorted(h["client"] for h in hss) == sorted(clients.values())
    by_client = {h["client"]: h["conn"] for h in hss}
    sizes = {by_client[clients[i]]: length for i, (_, length) in enumerate(results)}
    for c in closes:
        assert c["reason"] == "done", c
        assert num(c["bytes_up"]) == num(c["bytes_down"]) == sizes[c["conn"]], c
    assert up.accepted == n
    assert not up.errors


def test_unix_socket_listener(ssl_upstream, service, start_tlsfwd, tmp_path):
    up = ssl_upstream(echo_handler)
    path = str(tmp_path / "fwd.sock")
    fwd = start_tlsfwd({"svc": service("localhost:%d" % up.port, listen="unix:" + path)})
    assert fwd.listen["svc"] == "unix:" + path
    s = connect_unix(path)
    fwd.clients.append(s)
    s.sendall(b"over unix\n")
    assert recv_exact(s, 10) == b"over unix\n"
    s.shutdown(socket.SHUT_WR)
    assert recv_all(s) == b""
    hs = fwd.wait_handshake("svc")
    assert hs["client"] == "unix", hs
    assert hs["result"] == "ok"
    cl = fwd.wait_close(hs["conn"])
    assert cl["reason"] == "done" and num(cl["bytes_up"]) == 10


def test_two_services_are_independent(ssl_upstream, openssl_server, service, start_tlsfwd,
                                      client):
    up = ssl_upstream(echo_handler)
    srv = openssl_server("server", "-rev")
    fwd = start_tlsfwd({"echo": service("localhost:%d" % up.port),
                        "rev": service("localhost:%d" % srv.port)})
    assert fwd.wait_event("ready")["services"] in ("2", 2)
    a, b = client(fwd, "echo"), client(fwd, "rev")
    a.sendall(b"abc\n")
    b.sendall(b"abc\n")
    assert recv_exact(a, 4) == b"abc\n"
    assert recv_exact(b, 4) == b"cba\n"
    assert fwd.conn_of(a)["service"] == "echo"
    assert fwd.conn_of(b)["service"] == "rev"
    assert fwd.conn_of(a)["conn"] != fwd.conn_of(b)["conn"]


def test_listen_on_host_name(ssl_upstream, service, start_tlsfwd, client):
    up = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service(up.port, listen="localhost:0")})
    assert fwd.listen["svc"].startswith("127.0.0.1:"), fwd.listen
    s = client(fwd)
    s.sendall(b"named")
    assert recv_exact(s, 5) == b"named"


def test_sni_sent_and_ip_literal_sends_none(ssl_upstream, service, start_tlsfwd, client):
    seen = []
    up = ssl_upstream(echo_handler)
    up.ctx.sni_callback = lambda obj, name, ctx: seen.append(name)
    fwd = start_tlsfwd({"byname": service("localhost:%d" % up.port),
                        "byip": service("127.0.0.1:%d" % up.port),
                        "nosni": service("localhost:%d" % up.port, sni="-")})
    for name, want_sni in [("byname", "localhost"), ("byip", None), ("nosni", None)]:
        seen.clear()
        s = client(fwd, name)
        s.sendall(b"x")
        assert recv_exact(s, 1) == b"x"
        hs = fwd.conn_of(s)
        assert seen == [want_sni], (name, seen)
        assert hs["sni"] == (want_sni or "-"), hs
        # the certificate has DNS:localhost and IP:127.0.0.1, so all verify fully
        assert hs["result"] == "ok" and hs["verify"] == "ok", hs


def test_intermediate_chain_sent_by_upstream(ssl_upstream, pki, service, start_tlsfwd, client):
    up = ssl_upstream(echo_handler, cert="inter_server_chain", key=pki["inter_server_key"])
    fwd = start_tlsfwd({"svc": service("localhost:%d" % up.port)})
    s = client(fwd)
    s.sendall(b"chain")
    assert recv_exact(s, 5) == b"chain"
    hs = fwd.conn_of(s)
    assert hs["result"] == "ok" and hs["verify"] == "ok", hs
    assert "Intermediate" in hs["issuer"], hs


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3],
                         ids=["TLS1.2", "TLS1.3"])
def test_negotiated_version_and_cipher_logged(version, ssl_upstream, service, start_tlsfwd,
                                              client):
    def handler(conn):
        info = (conn.version(), conn.cipher()[0])
        echo_handler(conn)
        return info

    up = ssl_upstream(handler, min_version=version, max_version=version)
    fwd = start_tlsfwd({"svc": service("localhost:%d" % up.port)})
    s = client(fwd)
    s.sendall(b"v")
    assert recv_exact(s, 1) == b"v"
    s.shutdown(socket.SHUT_WR)
    assert recv_all(s) == b""
    proto, ossl_cipher = up.result()
    hs = fwd.conn_of(s)
    assert_ok_handshake(hs, up.port)
    assert hs["version"] == proto.replace("TLSv", "TLS"), (proto, hs)
    # OpenSSL says e.g. TLS_AES_256_GCM_SHA384 or ECDHE-ECDSA-AES256-GCM-SHA384,
    # GnuTLS e.g. AES-256-GCM: compare the bulk cipher
    norm = ossl_cipher.upper().replace("_", "-")
    bulk = "AES-256-GCM" if ("AES256-GCM" in norm or "AES-256-GCM" in norm) else \
        "AES-128-GCM" if ("AES128-GCM" in norm or "AES-128-GCM" in norm) else \
        "CHACHA20-POLY1305" if "CHACHA20" in norm else norm
    assert bulk in hs["cipher"].upper().replace("_", "-"), (ossl_cipher, hs["cipher"])
    assert hs["group"] not in ("",), hs
