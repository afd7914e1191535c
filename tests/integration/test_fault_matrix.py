"""Fault matrix: one test case per row.

Every case checks the exact fields of the log line that reports the fault,
then that the SAME tlsfwd process still carries a healthy connection to a good
upstream (exchange_ok: 64 KiB echoed byte for byte, result=ok, reason=done).
The start_tlsfwd fixture adds its checks at teardown: no sanitizer report,
every line parses, exactly one handshake and one close line per connection.

Rows:
  upstream side  test_upstream_fault[...] (refused, reset at once, reset
                 after the ClientHello, FIN mid-handshake, plaintext HTTP,
                 TLS alert, truncated record then stall, accept then silence,
                 no close_notify mid-transfer), test_upstream_never_answers
                 (SYNs into a black hole in a network namespace)
  client side    test_client_fault[...] (sends nothing, resets mid-transfer,
                 half-closes and keeps reading), test_client_reads_nothing_
                 while_upstream_streams_1gib
  resources      test_out_of_descriptors_pauses_and_recovers
  log injection  test_log_injection_certificate_and_alpn[logfmt|json],
                 test_log_injection_sni[logfmt|json]
"""

import hashlib
import os
import re
import resource
import socket
import ssl
import time

import pytest

import pki as pki_mod
from harness.clients import (connect, exchange_ok, recv_all, recv_closed, recv_exact, reset_close,
                             send_quiet, www_fetch)
from harness.config import ini_line
from harness.data import det_bytes, det_digest, wait_stalled
from harness.logfmt import json_log_form, num
from harness.namespaces import NetNs
from harness.procfs import rss_kib
from harness.tlsinfo import read_client_hello
from harness.upstreams import (refusing_port, echo_handler, listen_socket, OpenSSLServer,
                               server_context, StreamSource, Upstream)
from harness.wrapper import SLOW, WRAPPER

FAST = {"connect_timeout": "500ms", "handshake_timeout": "500ms"}
HEALTH = det_bytes("matrix-health", 64 << 10)
REQUEST = b"GET /matrix HTTP/1.0\r\n\r\n"

# The fields that say how a connection went. A case lists every one it
# expects; the others must be absent.
HANDSHAKE_KEYS = ("level", "result", "stage", "timeout", "error", "errno", "gnutls_error",
                  "alert", "alert_from", "alert_sent")
CLOSE_KEYS = ("level", "reason", "error", "errno", "gnutls_error", "alert")


def outcome(rec, keys):
    return {k: rec[k] for k in keys if k in rec}


def assert_outcome(rec, keys, want):
    """want: the exact fields, or a list of such dicts when the fault races
    tlsfwd's own steps and more than one report is right."""
    got = outcome(rec, keys)
    alternatives = want if isinstance(want, list) else [want]
    assert got in alternatives, "log fields differ\n got: %r\nwant: %s\nline: %r" % (
        got, "\n  or: ".join(repr(w) for w in alternatives), rec)


def handshake_failed(*hs_fields):
    """Expected fields of a failed connection: its handshake line (one dict, or
    several alternatives) and a close line with reason=handshake_failed (which
    repeats no error field)."""
    hs = [dict(f, level="warn") for f in hs_fields]
    return (hs[0] if len(hs) == 1 else hs), {"level": "warn", "reason": "handshake_failed"}


RESET = {"error": "Connection reset by peer", "errno": "ECONNRESET"}


# -- upstream behaviours (raw TCP handlers unless said otherwise) -------------------------

def reset_at_once(raw):
    reset_close(raw)


def reset_after_client_hello(raw):
    read_client_hello(raw)
    reset_close(raw)


def server_flight(raw, ctx):
    """Read the ClientHello from raw and let Python's ssl (ctx) answer it in
    memory; returns the server's first flight as bytes, not yet sent."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(inc, out, server_side=True)
    while not out.pending:
        data = raw.recv(65536)
        assert data, "EOF before the ClientHello"
        inc.write(data)
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
    flight = out.read()
    assert flight[0] == 22, flight[:5]
    return flight


def fin_mid_handshake(ctx):
    """Sends only the first record of a real server flight (the ServerHello),
    then closes its side (FIN)."""
    def handler(raw):
        flight = server_flight(raw, ctx)
        raw.sendall(flight[:5 + int.from_bytes(flight[3:5], "big")])
        raw.shutdown(socket.SHUT_WR)
        recv_closed(raw)
    return handler


def http_answer(raw):
    read_client_hello(raw)
    raw.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 11\r\nConnection: close\r\n\r\n"
                b"bad request")
    recv_closed(raw)


def fatal_alert(raw):
    read_client_hello(raw)
    raw.sendall(b"\x15\x03\x03\x00\x02\x02\x31")      # fatal(2) access_denied(49)
    recv_closed(raw)


def truncated_record_then_stall(raw):
    read_client_hello(raw)
    raw.sendall(b"\x16\x03\x03\x01\x00" + b"\x02\x00\x00")   # 256-byte record, 3 bytes of it
    recv_closed(raw)                                     # until tlsfwd gives up


def answer_then_drop(bc):
    """BIO mode: read the request, send part of an answer, drop TCP without close_notify."""
    req = bc.recv()
    bc.send(det_bytes("matrix-partial", 100000))
    bc.close()
    return req


# Each row: how the upstream behaves, service overrides, the expected
# (handshake fields, close fields), and what the client sees.
UPSTREAM_FAULTS = {
    "refuses_connect": (
        "closed", None, FAST,
        handshake_failed({"result": "fail", "stage": "connect", "error": "Connection refused",
                          "errno": "ECONNREFUSED"})),
    # The reset races tlsfwd: it may come before tlsfwd saw its connect()
    # complete (SO_ERROR), before its ClientHello (send) or after (recv).
    # Each way, the log must say it was a reset.
    "resets_at_once": (
        "raw", reset_at_once, {},
        handshake_failed(dict(RESET, result="fail", stage="connect"),
                         dict(RESET, result="fail", stage="handshake",
                              gnutls_error="GNUTLS_E_PULL_ERROR"),
                         dict(RESET, result="fail", stage="handshake",
                              gnutls_error="GNUTLS_E_PUSH_ERROR"),
                         dict(RESET, result="fail", stage="handshake",
                              gnutls_error="GNUTLS_E_PREMATURE_TERMINATION"))),
    "resets_after_client_hello": (
        "raw", reset_after_client_hello, {},
        handshake_failed(dict(RESET, result="fail", stage="handshake",
                              gnutls_error="GNUTLS_E_PULL_ERROR"))),
    "closes_mid_handshake": (
        "raw-tls", fin_mid_handshake, {},
        handshake_failed({"result": "fail", "stage": "handshake",
                          "error": "The TLS connection was non-properly terminated.",
                          "gnutls_error": "GNUTLS_E_PREMATURE_TERMINATION"})),
    "answers_plaintext_http": (
        "raw", http_answer, {},
        handshake_failed({"result": "alert", "stage": "handshake",
                          "error": "An unexpected TLS packet was received.",
                          "gnutls_error": "GNUTLS_E_UNEXPECTED_PACKET",
                          "alert": "unexpected_message", "alert_from": "tlsfwd"})),
    "sends_tls_alert": (
        "raw", fatal_alert, {},
        handshake_failed({"result": "alert", "stage": "handshake",
                          "error": "A TLS fatal alert has been received.",
                          "gnutls_error": "GNUTLS_E_FATAL_ALERT_RECEIVED",
                          "alert": "access_denied", "alert_from": "upstream"})),
    "truncated_record_then_stalls": (
        "raw", truncated_record_then_stall, FAST,
        handshake_failed({"result": "fail", "stage": "timeout", "timeout": "handshake",
                          "error": "TLS handshake not finished within 500 ms"})),
    "accepts_then_handshake_stalls": (
        "silent", None, FAST,
        handshake_failed({"result": "fail", "stage": "timeout", "timeout": "handshake",
                          "error": "TLS handshake not finished within 500 ms"})),
    "no_close_notify_mid_transfer": (
        "bio", answer_then_drop, {},
        ({"level": "info", "result": "ok"}, {"level": "warn", "reason": "upstream_truncated"})),
}


def make_upstream(kind, behaviour, pki, raw_upstream, ssl_upstream, silent_upstream):
    """The upstream for a row: (its port, the server object, None for "closed")."""
    if kind == "closed":
        return refusing_port(), None
    if kind == "silent":
        up = silent_upstream()
    elif kind == "raw-tls":
        up = raw_upstream(behaviour(server_context(pki["server"], pki["server_key"])))
    elif kind == "bio":
        up = ssl_upstream(behaviour, mode="bio")
    else:
        up = raw_upstream(behaviour)
    return up.port, up


def check_refused_client(fwd, s, want_hs, want_cl):
    """The client of a failed handshake: nothing relayed, its connection closed,
    and the two log lines as expected. Returns (handshake record, close record,
    seconds from the client's request to its close)."""
    t0 = time.monotonic()
    send_quiet(s, REQUEST)
    data, _how = recv_closed(s)     # a FIN, or a RST as the request was never read
    elapsed = time.monotonic() - t0
    assert data == b"", "bytes relayed despite the failed handshake: %r" % data[:80]
    hs = fwd.conn_of(s)
    cl = fwd.wait_close(hs["conn"])
    assert_outcome(hs, HANDSHAKE_KEYS, want_hs)
    assert_outcome(cl, CLOSE_KEYS, want_cl)
    assert (num(cl["bytes_up"]), num(cl["bytes_down"])) == (0, 0), cl
    return hs, cl, elapsed


@pytest.mark.parametrize("row", list(UPSTREAM_FAULTS))
def test_upstream_fault(row, pki, raw_upstream, ssl_upstream, silent_upstream, service,
                        start_tlsfwd, client):
    kind, behaviour, opts, (want_hs, want_cl) = UPSTREAM_FAULTS[row]
    port, up = make_upstream(kind, behaviour, pki, raw_upstream, ssl_upstream, silent_upstream)
    good = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service(port, **opts), "good": service(good.port)})
    s = client(fwd)
    if kind != "bio":
        hs, cl, elapsed = check_refused_client(fwd, s, want_hs, want_cl)
        if row == "refuses_connect":          # nothing to wait for: closed at once
            assert elapsed < 2.0 * SLOW, "client not closed promptly (%.2fs)" % elapsed
        if "timeout" in want_hs:
            assert 0.45 <= elapsed < 3.0 * SLOW, \
                "handshake_timeout=500ms, closed after %.2fs" % elapsed
            if "handshake_ms" in hs:
                assert num(hs["handshake_ms"]) >= 450, hs
            assert num(cl["duration_ms"]) >= 450, cl
        if kind == "silent":
            assert len(up.conns) == 1, "tlsfwd connected %d times" % len(up.conns)
    else:
        # the upstream answers part of the request, then drops TCP: the
        # client gets what was sent, then a FIN, and the log says truncated
        s.sendall(REQUEST)
        data, how = recv_closed(s)
        assert how == "eof" and data == det_bytes("matrix-partial", 100000), (len(data), how)
        assert up.result() == REQUEST
        s.shutdown(socket.SHUT_WR)
        hs = fwd.conn_of(s)
        cl = fwd.wait_close(hs["conn"])
        assert_outcome(hs, HANDSHAKE_KEYS, want_hs)
        assert_outcome(cl, CLOSE_KEYS, want_cl)
        assert (num(cl["bytes_up"]), num(cl["bytes_down"])) == (len(REQUEST), 100000), cl
    assert hs["upstream"] == "127.0.0.1:%d" % port, hs
    exchange_ok(fwd, "good", HEALTH)


def test_upstream_never_answers(pki, service, start_tlsfwd, cleanup):
    """connect_timeout: tlsfwd runs in a network namespace where SYNs to
    192.0.2.1 leave through a veth into nothing (no RST, no ICMP). The good
    upstream and the clients live in that namespace too."""
    if os.geteuid() != 0:
        pytest.skip("needs root for `ip netns add`")
    try:
        ns = NetNs()
    except OSError as e:
        pytest.skip("cannot make a network namespace here: %s" % e)
    cleanup.append(ns)
    good = Upstream(echo_handler, ctx=server_context(pki["server"], pki["server_key"]),
                      sock=ns.call(listen_socket, 64))
    cleanup.append(good)
    fwd = start_tlsfwd({"svc": service("%s:443" % NetNs.BLACKHOLE, **FAST),
                        "good": service(good.port)}, argv=ns.wrap)
    s = ns.call(connect, fwd.ports["svc"])
    fwd.clients.append(s)
    want_hs, want_cl = handshake_failed({"result": "fail", "stage": "timeout",
                                         "timeout": "connect", "error": "Connection timed out",
                                         "errno": "ETIMEDOUT"})
    t0 = time.monotonic()
    hs, cl, _ = check_refused_client(fwd, s, want_hs, want_cl)
    assert 0.45 <= time.monotonic() - t0 < 3.0
    assert hs["upstream"] == "%s:443" % NetNs.BLACKHOLE, hs
    exchange_ok(fwd, "good", HEALTH, dial=lambda port: ns.call(connect, port))


# -- client side ------------------------------------------------------------------------

RESPONSE_SIZE = 1 << 20


def answer_after_close_notify(bc):
    """BIO mode: read the request up to the client's close_notify (the
    client's FIN, relayed), only then answer 1 MiB and close cleanly."""
    req = bc.recv_until_eof()
    assert bc.got_close_notify
    bc.send(det_bytes("matrix-response", RESPONSE_SIZE))
    bc.send_close_notify()
    return req


def sends_nothing(s, up):
    """Connects and sends nothing: closed (FIN) at idle_timeout."""
    t0 = time.monotonic()
    assert recv_closed(s) == (b"", "eof")
    assert 0.45 <= time.monotonic() - t0 < 3.0, "idle_timeout=500ms, closed after %.2fs" % (
        time.monotonic() - t0)
    return 0, 0


def resets_mid_transfer(s, up):
    """Reads 1 MiB of a 64 MiB download, then resets."""
    assert recv_exact(s, 1 << 20) == det_bytes("matrix-stream", 1 << 20)
    reset_close(s)
    assert up.result() == "stopped"        # tlsfwd closed the upstream too
    return 0, None


def half_closes_and_keeps_reading(s, up):
    """Sends the request, half-closes, then reads the whole answer."""
    s.sendall(REQUEST)
    s.shutdown(socket.SHUT_WR)
    data = recv_all(s)
    assert len(data) == RESPONSE_SIZE and data == det_bytes("matrix-response", RESPONSE_SIZE)
    assert up.result() == REQUEST
    return len(REQUEST), RESPONSE_SIZE


# Each row: the upstream (a function making its handler, and the mode for
# ssl_upstream), service overrides, what the client does, the close fields.
CLIENT_FAULTS = {
    "sends_nothing": (lambda: echo_handler, "ssl", {"idle_timeout": "500ms"},
                      sends_nothing, {"level": "warn", "reason": "idle_timeout"}),
    "resets_mid_transfer": (lambda: StreamSource("matrix-stream", 64 << 20), "bio", {},
                            resets_mid_transfer,
                            dict(RESET, level="warn", reason="client_error")),
    "half_closes_and_keeps_reading": (lambda: answer_after_close_notify, "bio", {},
                                      half_closes_and_keeps_reading,
                                      {"level": "info", "reason": "done"}),
}


# sends_nothing times idle_timeout=500ms from the handshake line: under
# TLSFWD_WRAPPER (make valgrind) that line comes too late to start the clock.
CLIENT_ROWS = [pytest.param(r, marks=pytest.mark.skipif(
    bool(WRAPPER) and r == "sends_nothing", reason="times a 500 ms timeout; tlsfwd runs "
    "much slower under TLSFWD_WRAPPER")) for r in CLIENT_FAULTS]


@pytest.mark.parametrize("row", CLIENT_ROWS)
def test_client_fault(row, ssl_upstream, service, start_tlsfwd, client):
    make_handler, mode, opts, act, want_cl = CLIENT_FAULTS[row]
    up = ssl_upstream(make_handler(), mode=mode)
    good = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service(up.port, **opts), "good": service(good.port)})
    s = client(fwd)
    hs = fwd.conn_of(s)
    assert_outcome(hs, HANDSHAKE_KEYS, {"level": "info", "result": "ok"})
    up_bytes, down_bytes = act(s, up)
    cl = fwd.wait_close(hs["conn"])
    assert_outcome(cl, CLOSE_KEYS, want_cl)
    assert num(cl["bytes_up"]) == up_bytes, cl
    if down_bytes is not None:
        assert num(cl["bytes_down"]) == down_bytes, cl
    exchange_ok(fwd, "good", HEALTH)


GIB = 1 << 30


@pytest.mark.skipif(bool(WRAPPER), reason="1 GiB through valgrind takes minutes; "
                    "test_robustness.py's backpressure tests cover the stall under it")
def test_client_reads_nothing_while_upstream_streams_1gib(ssl_upstream, service, start_tlsfwd,
                                                          client, rss_limit_kib):
    """Backpressure: the upstream offers 1 GiB; while the client reads nothing,
    the upstream must stall after a few MiB and tlsfwd's RSS stay bounded (and
    other connections keep working). Then the client reads the whole GiB and
    its digest matches."""
    src = StreamSource("matrix-gib", GIB)
    up = ssl_upstream(src, mode="bio")
    good = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service(up.port), "good": service(good.port)})
    base = rss_kib(fwd.pid)
    s = client(fwd, timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    stalled = wait_stalled(lambda: src.sent, GIB)
    grown = rss_kib(fwd.pid) - base
    assert stalled < 64 << 20, "the upstream pushed %d bytes to a client reading nothing" % stalled
    assert grown < rss_limit_kib, "tlsfwd RSS grew by %d KiB while the client read nothing" % grown
    exchange_ok(fwd, "good", HEALTH)            # the loop is not stuck on the stalled one

    h = hashlib.sha256()
    n = 0
    while True:
        d = s.recv(1 << 20)
        if not d:
            break
        h.update(d)
        n += len(d)
    assert n == GIB and h.hexdigest() == det_digest("matrix-gib", GIB), n
    assert up.result(30) == "sent all"
    s.shutdown(socket.SHUT_WR)
    cl = fwd.wait_close(fwd.conn_of(s)["conn"])
    assert_outcome(cl, CLOSE_KEYS, {"level": "info", "reason": "done"})
    assert num(cl["bytes_down"]) == GIB, cl
    exchange_ok(fwd, "good", HEALTH)


# -- resources ----------------------------------------------------------------------------

CAPACITY = 6          # connections that fit in the lowered RLIMIT_NOFILE (two fds each)
BACKLOG = 3           # clients left waiting in the accept queue meanwhile
ACCEPTING_AGAIN = re.compile(r"accepting again after (\d+) pause\(s\)")


def accept_lines(fwd, start, level=None):
    return [r for r in fwd.records[start:] if r is not None and r.get("event") == "accept"
            and level in (None, r.get("level"))]


@pytest.mark.skipif(bool(WRAPPER), reason="valgrind keeps its own descriptor limit "
                    "(prlimit does not reach it) and the CPU time measured is its own")
def test_out_of_descriptors_pauses_and_recovers(ssl_upstream, service, start_tlsfwd):
    """RLIMIT_NOFILE lowered (prlimit on the running tlsfwd) to what it holds
    plus CAPACITY connections; CAPACITY + BACKLOG clients: accept() fails with
    EMFILE. tlsfwd logs one event=accept level=error line for the whole burst,
    pauses accepting instead of spinning (its CPU time over a 1 s window,
    measured, stays near 0), and once descriptors are free logs one level=info
    "accepting again after N pause(s)" line and serves again. (The limit is
    set from the descriptors tlsfwd holds, so that no connection is left with
    one free descriptor for its client and none for its upstream.)"""
    up = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service(up.port)})
    held = len(os.listdir("/proc/%d/fd" % fwd.pid))
    limit = held + 2 * CAPACITY
    resource.prlimit(fwd.pid, resource.RLIMIT_NOFILE, (limit, limit))
    start = fwd.mark()
    clients = []
    try:
        for _ in range(CAPACITY):
            clients.append(connect(fwd.ports["svc"]))
            assert fwd.conn_of(clients[-1])["result"] == "ok"
        for _ in range(BACKLOG):
            clients.append(connect(fwd.ports["svc"]))
        err = fwd.wait_for(lambda r: r.get("event") == "accept" and r.get("level") == "error",
                           10, start, "event=accept level=error")[1]
        assert "Too many open files" in err["msg"] and "pausing accept" in err["msg"], err
        cpu0, t0 = fwd.cpu_seconds(), time.monotonic()
        time.sleep(1.0)                         # the window measured: several pauses long
        busy = (fwd.cpu_seconds() - cpu0) / (time.monotonic() - t0)
        assert fwd.proc.poll() is None
        assert busy < 0.05, "tlsfwd used %.0f%% CPU while out of descriptors" % (busy * 100)
        assert len(accept_lines(fwd, start, "error")) == 1, accept_lines(fwd, start)
    finally:
        for c in clients:
            c.close()
    again = fwd.wait_for(lambda r: r.get("event") == "accept" and r.get("level") == "info",
                         10, start, "event=accept level=info (accepting again)")[1]
    m = ACCEPTING_AGAIN.search(again["msg"])
    assert m and int(m.group(1)) >= 2, again      # the 1 s burst was several pauses
    exchange_ok(fwd, "svc", HEALTH)
    assert len(accept_lines(fwd, start, "error")) == 1, accept_lines(fwd, start)
    assert len(accept_lines(fwd, start, "info")) == 1, accept_lines(fwd, start)


# -- log injection ------------------------------------------------------------------------
#
# GnuTLS hands tlsfwd a DN as RFC 4514 text: it escapes '"' and '\\' itself
# but passes newlines, CRs, tabs, other control bytes and bytes that are not
# UTF-8 through as they are (a value with a NUL, or a T61String, it writes as
# #HEX). The names below use those paths; what tlsfwd must log is exactly the
# string GnuTLS gives it (pki.gnutls_dns), escaped so that it stays one line.

FORGED = b"\nts=2026-01-01T00:00:00.000Z level=error event=forged"
CA_NAME = [(pki_mod.OID_O, pki_mod.TAG_UTF8, b'tlsfwd "odd" CA = \\ \r\n\t'),
           (pki_mod.OID_OU, pki_mod.TAG_PRINTABLE, b"not UTF-8: \xff\xfe\x80 \xc3("),
           (pki_mod.OID_CN, pki_mod.TAG_UTF8, b"CA \x01\x07\x1b\x7f" + FORGED)]
LEAF_NAME = [(pki_mod.OID_O, pki_mod.TAG_PRINTABLE, b"\xff\xfe=\"x\"\n"),
             (pki_mod.OID_OU, pki_mod.TAG_UTF8, b"has a NUL:\x00 and \x01"),
             (pki_mod.OID_CN, pki_mod.TAG_UTF8, b'localhost" x="y' + FORGED)]
CLIENT_NAME = [(pki_mod.OID_O, pki_mod.TAG_PRINTABLE, b"\xe9t\xe9 \xc0\x80"),
               (pki_mod.OID_CN, pki_mod.TAG_UTF8, b"client\r\n\t\"k=v\" \\ \x1b[31m" + FORGED)]
ODD_ALPN = b'h2\r"x=y\\\x01\x7f\xff\xfe\tz'          # no comma, NUL or newline: config syntax
ODD_SNI = b'odd"sni=\\\x01\x7f\xff\tz'


@pytest.fixture(scope="module")
def odd_pki(tmp_path_factory):
    """A CA, a server leaf (localhost, 127.0.0.1) and a client certificate whose
    names hold quotes, '=', backslashes, CR/LF/tab, other control bytes, a NUL,
    bytes that are not UTF-8, and a newline followed by a forged log line."""
    d = str(tmp_path_factory.mktemp("oddpki"))
    ca, ca_key = pki_mod.der_certificate(d, "odd-ca", CA_NAME, CA_NAME, ca=True)
    leaf, leaf_key = pki_mod.der_certificate(d, "odd-leaf", LEAF_NAME, CA_NAME, signer_key=ca_key)
    cli, cli_key = pki_mod.der_certificate(d, "odd-client", CLIENT_NAME, CA_NAME,
                                           signer_key=ca_key, client=True)
    return {"ca": ca, "leaf": leaf, "leaf_key": leaf_key, "client": cli, "client_key": cli_key}


def ini_value(raw):
    """Bytes as a config value (start_tlsfwd writes strings with surrogateescape)."""
    return raw.decode("utf-8", "surrogateescape")


def logged_as(fmt, raw):
    """The decoded field a log line in `fmt` must give for the bytes raw: the
    bytes themselves in logfmt, json_log_form in JSON."""
    return ini_value(raw) if fmt == "logfmt" else json_log_form(raw)


def assert_lines_intact(fwd):
    """Every line of stderr is one whole log record: UTF-8, no raw control
    byte, parses in its format, starts with ts/level/event; none forged."""
    raw = bytes(fwd.raw)
    raw.decode("utf-8")                              # strict: invalid bytes were escaped
    assert not re.search(rb"[\x00-\x09\x0b-\x1f\x7f]", raw), "raw control byte on stderr"
    assert not fwd.parse_errors, fwd.parse_errors[:3]
    assert len(fwd.records) == raw.count(b"\n")
    for r in fwd.records:
        assert list(r)[:3] == ["ts", "level", "event"], r
        assert r["event"] != "forged", r


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_log_injection_certificate_and_alpn(fmt, odd_pki, ssl_upstream, service, start_tlsfwd,
                                            cleanup):
    """An upstream whose certificate (and its issuer) has hostile names, that
    selects an ALPN protocol with odd bytes (tlsfwd offers it: `alpn` takes
    any bytes but commas), and that asks for tlsfwd's client certificate, which
    has a hostile name too. peer=, issuer=, client_cert= and alpn= must come
    out of the line exactly as given, and every line must stay one line."""
    srv = OpenSSLServer(odd_pki["leaf"], odd_pki["leaf_key"], "-alpn", ODD_ALPN, "-www",
                          "-verify", "1")
    cleanup.append(srv)
    good = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"odd": service("localhost:%d" % srv.port, ca_file=odd_pki["ca"],
                                       alpn=ini_value(ODD_ALPN), cert_file=odd_pki["client"],
                                       key_file=odd_pki["client_key"]),
                        "good": service(good.port)}, {"log_format": fmt})
    s = connect(fwd.ports["odd"])
    fwd.clients.append(s)
    page = www_fetch(s)
    assert page.startswith(b"HTTP/1.0 200 ok"), (page[:200], srv.lines[-5:])
    hs = fwd.conn_of(s)
    cl = fwd.wait_close(hs["conn"])
    assert (hs["result"], hs["verify"], cl["reason"]) == ("ok", "ok", "done"), (hs, cl)
    peer, issuer = pki_mod.gnutls_dns(odd_pki["leaf"])
    client_subject = pki_mod.gnutls_dns(odd_pki["client"])[0]
    for raw in (b"\n", b"\r", b'"', b"=", b"\\", b"\x01", b"\xff"):   # the names are hostile
        assert raw in peer + issuer, raw
    assert hs["peer"] == logged_as(fmt, peer), hs
    assert hs["issuer"] == logged_as(fmt, issuer), hs
    assert hs["client_cert"] == logged_as(fmt, client_subject), hs
    assert hs["alpn"] == logged_as(fmt, ODD_ALPN), hs
    exchange_ok(fwd, "good", HEALTH)
    assert_lines_intact(fwd)


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_log_injection_sni(fmt, ssl_upstream, service, start_tlsfwd, check_ini):
    """`sni` only takes a DNS name: odd bytes are a config error naming FILE:LINE
    (`tlsfwd -t`), and the same error logged at a reload (event=config, with
    the value quoted back) stays one parsable line; the old configuration
    keeps serving."""
    good = ssl_upstream(echo_handler)
    bad = {"svc": service(good.port, sni=ini_value(ODD_SNI))}
    rc, errors, text, path = check_ini(bad)
    line = ini_line(text, "svc", "sni")
    assert rc == 1 and [(f, n) for f, n, _m in errors] == [(path, line)], errors
    assert errors[0][2].startswith("sni: '"), errors

    fwd = start_tlsfwd({"svc": service(good.port)}, {"log_format": fmt})
    text = fwd.write_config(bad, {"log_format": fmt})
    start, rec = fwd.reload()
    assert (rec["result"], num(rec["errors"])) == ("fail", 1), rec
    err = fwd.wait_event("config", start=start, level="error")
    want = b"%s:%d: sni: '%s' is not a DNS host name (IP addresses cannot be sent as SNI; " \
           b"'-' sends none)" % (fwd.config_path.encode(), ini_line(text, "svc", "sni"), ODD_SNI)
    assert err["error"] == logged_as(fmt, want), err
    exchange_ok(fwd, "svc", HEALTH)
    assert_lines_intact(fwd)
