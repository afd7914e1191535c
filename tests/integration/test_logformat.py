"""Log format: logfmt and JSON lines, documented fields and types.

(Every tlsfwd started by the fixtures is also checked at teardown: each line
parses, starts with ts/level/event, and each connection has exactly one
handshake line followed by exactly one close line.)"""

import signal
import socket
import threading
import time

import pytest

from harness.clients import connect_unix, recv_all, recv_closed, recv_exact
from harness.daemon import run_tlsfwd
from harness.logfmt import LogfmtError, parse_logfmt
from harness.upstreams import refusing_port, echo_handler

HANDSHAKE_OK_FIELDS = ["service", "conn", "client", "upstream", "sni", "result", "version",
                       "cipher", "group", "alpn", "resumed", "verify", "peer", "issuer",
                       "connect_ms", "handshake_ms"]
CLOSE_FIELDS = ["service", "conn", "client", "upstream", "reason", "bytes_up", "bytes_down",
                "duration_ms"]


# -- the parser used by every test --------------------------------------------------

def test_parser_accepts_documented_forms():
    line = ('ts=2026-11-25T05:01:02.345Z level=info event=handshake peer="CN=a b" '
            'e="" q="say \\"hi\\"" bs="a\\\\b" ctl="x\\ny\\r\\tz\\x01" raw=\\xff n=7')
    r = parse_logfmt(line)
    assert list(r)[:3] == ["ts", "level", "event"]
    assert r["peer"] == "CN=a b"
    assert r["e"] == ""
    assert r["q"] == 'say "hi"'
    assert r["bs"] == "a\\b"
    assert r["ctl"] == "x\ny\r\tz\x01"
    assert r["raw"].encode("utf-8", "surrogateescape") == b"\xff"
    assert r["n"] == "7"
    assert parse_logfmt('k="Ünï"') == {"k": "Ünï"}


@pytest.mark.parametrize("bad", ['k=', 'k="open', 'k=a"b', 'k=a=b', 'k=1  j=2', 'k=1 ',
                                 'k=1 k=2', '=v', 'k="x"y', 'k="\\q"', 'k="a\tb"', 'k'])
def test_parser_rejects(bad):
    with pytest.raises(LogfmtError):
        parse_logfmt(bad)


# -- tlsfwd output ----------------------------------------------------------------

def one_exchange(fwd, client, service="svc"):
    s = client(fwd, service)
    s.sendall(b"ping")
    assert recv_exact(s, 4) == b"ping"
    s.shutdown(socket.SHUT_WR)
    assert recv_all(s) == b""
    hs = fwd.conn_of(s)
    return hs, fwd.wait_close(hs["conn"])


def test_logfmt_lines(ssl_upstream, service, start_tlsfwd, client, tlsfwd_bin):
    up = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service("localhost:%d" % up.port)}, {"log_level": "debug"})
    start = fwd.find("start")
    version = run_tlsfwd(tlsfwd_bin, ["-V"]).stdout.split()[1].decode()   # "tlsfwd X.Y.Z"
    assert start and any(version in str(v) for v in start[0].values()), (version, start)
    assert fwd.records.index(start[0]) < fwd.records.index(fwd.find("listening")[0])
    listening = fwd.find("listening", service="svc")
    assert len(listening) == 1 and listening[0]["listen"].startswith("127.0.0.1:")
    assert str(fwd.find("ready")[0]["services"]) == "1"
    hs, cl = one_exchange(fwd, client)
    for f in HANDSHAKE_OK_FIELDS:
        assert f in hs, "handshake line lacks %s: %r" % (f, hs)
    for f in CLOSE_FIELDS:
        assert f in cl, "close line lacks %s: %r" % (f, cl)
    # the raw line quotes what must be quoted
    raw = next(ln for ln in fwd.lines if "event=handshake" in ln)
    assert 'peer="' in raw and 'issuer="' in raw, raw   # DNs contain '='
    assert not fwd.parse_errors, fwd.parse_errors


def test_json_lines(ssl_upstream, service, start_tlsfwd, client):
    up = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service("localhost:%d" % up.port),
                        "dead": service(refusing_port())}, {"log_format": "json"})
    hs, cl = one_exchange(fwd, client)
    s = client(fwd, "dead")
    assert recv_closed(s)[0] == b""
    bad = fwd.conn_of(s)
    fwd.wait_close(bad["conn"])

    assert not fwd.parse_errors, "lines that are not JSON: %r" % fwd.parse_errors
    assert all(isinstance(r, dict) and list(r)[:3] == ["ts", "level", "event"]
               for r in fwd.records), fwd.log_text()
    for f in HANDSHAKE_OK_FIELDS:
        assert f in hs, "handshake lacks %s: %r" % (f, hs)
    for f in ("connect_ms", "handshake_ms"):
        assert isinstance(hs[f], (int, float)) and not isinstance(hs[f], bool), (f, hs)
    for f in ("bytes_up", "bytes_down", "duration_ms"):
        assert isinstance(cl[f], (int, float)) and not isinstance(cl[f], bool), (f, cl)
    assert (cl["bytes_up"], cl["bytes_down"]) == (4, 4)
    for f in ("service", "client", "upstream", "sni", "result", "version", "cipher",
              "verify", "peer", "issuer", "resumed"):
        assert isinstance(hs[f], str), (f, hs)
    assert isinstance(cl["reason"], str) and cl["reason"] == "done"
    assert hs["result"] == "ok" and hs["peer"].find("CN=localhost") >= 0
    assert (bad["result"], bad["stage"], bad["errno"]) == ("fail", "connect", "ECONNREFUSED")
    assert isinstance(bad["error"], str)


def test_escaping_of_unusual_subject(ssl_upstream, service, start_tlsfwd, client):
    """A subject with a quote, a backslash and UTF-8 goes through logfmt and JSON
    and decodes to the same string."""
    up = ssl_upstream(echo_handler, cert="weird")
    peers = []
    for fmt in ("logfmt", "json"):
        fwd = start_tlsfwd({"svc": service("localhost:%d" % up.port)}, {"log_format": fmt})
        hs, _ = one_exchange(fwd, client)
        assert hs["result"] == "ok", hs
        peers.append(hs["peer"])
        assert "Ünïcødé" in hs["peer"], hs["peer"]
        assert '"Org' in hs["peer"] and "\\" in hs["peer"], hs["peer"]
        raw = next(ln for ln in fwd.lines if '"event":"handshake"' in ln.replace(" ", "")
                   or "event=handshake" in ln)
        assert "\n" not in raw
    assert peers[0] == peers[1], peers


def test_log_level_warn_hides_info(ssl_upstream, service, start_tlsfwd, tmp_path):
    """With log_level = warn only warn/error lines appear: a good connection logs
    nothing, a failing one logs its handshake and close lines (both warn)."""
    up = ssl_upstream(echo_handler)
    good, bad = str(tmp_path / "good.sock"), str(tmp_path / "bad.sock")
    fwd = start_tlsfwd({"good": service(up.port, listen="unix:" + good),
                        "bad": service(refusing_port(), listen="unix:" + bad)},
                       {"log_level": "warn"}, ready=False)
    # no event=ready at this level: poll the unix socket until it accepts
    deadline = time.monotonic() + 10
    while True:
        try:
            s = connect_unix(good)
            break
        except (FileNotFoundError, ConnectionRefusedError):
            assert time.monotonic() < deadline and fwd.proc.poll() is None, fwd.log_text()
            time.sleep(0.02)
    fwd.clients.append(s)
    s.sendall(b"quiet")
    assert recv_exact(s, 5) == b"quiet"
    s.shutdown(socket.SHUT_WR)
    assert recv_all(s) == b""
    b = connect_unix(bad)
    fwd.clients.append(b)
    assert recv_closed(b)[0] == b""
    hs = fwd.wait_event("handshake", service="bad")
    fwd.wait_close(hs["conn"])
    fwd.signal(signal.SIGTERM)
    assert fwd.wait_exit(10) == 0
    levels = {r["level"] for r in fwd.records if r}
    assert levels <= {"warn", "error"}, fwd.log_text()
    assert not fwd.find("handshake", service="good"), fwd.log_text()
    assert not fwd.find("ready")


def test_peer_fields_follow_the_certificate(ssl_upstream, raw_upstream, service, start_tlsfwd,
                                            client):
    """tlsfwd keeps the DNs of the last upstream certificate it parsed for the
    log line: when the certificate behind one service changes (here a TCP
    relay sends connections in turn to two upstreams with different
    certificates), peer= and issuer= must change with it, and come back."""
    ups = [ssl_upstream(echo_handler), ssl_upstream(echo_handler, cert="weird")]
    turn = [0]

    def relay(conn):
        backend = socket.create_connection(("127.0.0.1", ups[turn[0] % 2].port), 10)
        turn[0] += 1

        def pump(a, b):
            try:
                while True:
                    d = a.recv(65536)
                    if not d:
                        break
                    b.sendall(d)
                b.shutdown(socket.SHUT_WR)
            except OSError:
                pass

        t = threading.Thread(target=pump, args=(backend, conn), daemon=True)
        t.start()
        pump(conn, backend)
        t.join(10)
        backend.close()

    front = raw_upstream(relay)
    fwd = start_tlsfwd({"svc": service("localhost:%d" % front.port)})
    seen = []
    for _ in range(4):
        hs, _cl = one_exchange(fwd, client)
        assert hs["result"] == "ok", hs
        seen.append(hs["peer"])
    assert "CN=localhost" in seen[0] and "Ünïcødé" in seen[1], seen
    assert seen[2] == seen[0] and seen[3] == seen[1], seen
