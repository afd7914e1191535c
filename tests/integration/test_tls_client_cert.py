"""Client certificates (mTLS): cert_file, key_file, key_password_file.

Upstreams are `openssl s_server -Verify 1 -CAfile ca.pem` (a client certificate
signed by the test CA is required) serving `-www` status pages, which print the
client certificate the server received."""

import collections
import concurrent.futures
import os
import shutil
import socket
import time

import pytest

from harness.clients import HTTP_REQUEST, recv_all, recv_closed, recv_exact, send_quiet, www_fetch
from harness.config import ini_line, section_line
from harness.daemon import run_tlsfwd
from harness.logfmt import num
from harness.upstreams import echo_handler, server_context, Upstream

CLIENT_CN = "CN=tlsfwd test client"
VERSIONS = ["tls1_3", "tls1_2"]


def mtls_server(openssl_server, pki, version):
    return openssl_server("server", "-www", "-Verify", "1", "-CAfile", pki["ca"], "-" + version)


@pytest.mark.parametrize("version", VERSIONS)
def test_client_cert_sent_and_accepted(version, openssl_server, pki, service, start_tlsfwd,
                                       client):
    srv = mtls_server(openssl_server, pki, version)
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port, cert_file=pki["client"],
                                       key_file=pki["client_key"])})
    s = client(fwd)
    page = www_fetch(s)
    assert page.startswith(b"HTTP/1.0 200 ok"), page[:200]
    # the upstream really received (and verified) our certificate
    assert b"Client certificate" in page and b"tlsfwd test client" in page, page[-2000:]
    hs = fwd.conn_of(s)
    assert hs["result"] == "ok", hs
    assert hs["version"] == {"tls1_3": "TLS1.3", "tls1_2": "TLS1.2"}[version], hs
    assert CLIENT_CN in hs["client_cert"], hs
    assert hs["verify"] == "ok", hs


@pytest.mark.parametrize("version", VERSIONS)
def test_upstream_requiring_client_cert_refuses_none(version, openssl_server, pki, service,
                                                     start_tlsfwd, client):
    srv = mtls_server(openssl_server, pki, version)
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port)})
    s = client(fwd)
    send_quiet(s, HTTP_REQUEST)
    data, _how = recv_closed(s)
    assert data == b"", "bytes relayed from an upstream that refused us: %r" % data[:100]
    hs = fwd.conn_of(s)
    cl = fwd.wait_close(hs["conn"])
    # The contract: such a connection is not reported as a successful handshake
    # (in TLS 1.3 the upstream's certificate_required alert follows the client's
    # Finished, so tlsfwd has to wait for the upstream's verdict to get this right).
    assert hs["result"] != "ok", "refused connection logged as result=ok:\n" + fwd.log_text(6)
    assert hs["result"] in ("alert", "fail"), hs
    if hs["result"] == "alert":
        assert hs["alert_from"] == "upstream", hs
    assert cl["reason"] == "handshake_failed", cl
    assert num(cl["bytes_down"]) == 0, cl
    # the upstream refused for the right reason
    srv.wait_line("peer did not return a certificate")


def test_client_cert_with_intermediate_chain(openssl_server, pki, service, start_tlsfwd,
                                             client):
    """cert_file holds the leaf and its intermediate; the upstream trusts only the
    root, so tlsfwd must send the whole chain."""
    srv = openssl_server("server", "-www", "-Verify", "2", "-CAfile", pki["ca"])
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port,
                                       cert_file=pki["inter_client_chain"],
                                       key_file=pki["inter_client_key"])})
    s = client(fwd)
    page = www_fetch(s)
    assert page.startswith(b"HTTP/1.0 200 ok") and b"tlsfwd intermediate client" in page, \
        page[:300]
    hs = fwd.conn_of(s)
    assert hs["result"] == "ok", hs
    assert "CN=tlsfwd intermediate client" in hs["client_cert"], hs   # the leaf's subject


def test_client_cert_in_json_log(openssl_server, pki, service, start_tlsfwd, client):
    srv = mtls_server(openssl_server, pki, "tls1_3")
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port, cert_file=pki["client"],
                                       key_file=pki["client_key"])},
                       {"log_format": "json"})
    s = client(fwd)
    assert www_fetch(s).startswith(b"HTTP/1.0 200 ok")
    hs = fwd.conn_of(s)
    assert hs["result"] == "ok" and CLIENT_CN in hs["client_cert"], hs
    assert (hs["pin"], hs["ocsp"]) == ("-", "none"), hs


def test_client_cert_not_sent_when_not_requested(openssl_server, pki, service, start_tlsfwd,
                                                 client):
    srv = openssl_server("server", "-www")
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port, cert_file=pki["client"],
                                       key_file=pki["client_key"])})
    s = client(fwd)
    page = www_fetch(s)
    assert page.startswith(b"HTTP/1.0 200 ok"), page[:200]
    assert b"Client certificate" not in page
    hs = fwd.conn_of(s)
    assert hs["result"] == "ok", hs
    assert hs["client_cert"] == "-", hs


def test_no_client_cert_configured_logs_dash(openssl_server, service, start_tlsfwd, client):
    srv = openssl_server("server", "-www")
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port)})
    s = client(fwd)
    assert www_fetch(s).startswith(b"HTTP/1.0 200 ok")
    hs = fwd.conn_of(s)
    assert hs["result"] == "ok" and hs["client_cert"] == "-", hs


def test_encrypted_key_with_password_file(openssl_server, pki, service, start_tlsfwd, client,
                                          check_ini):
    with open(pki["client_enc_key"]) as f:
        assert "ENCRYPTED" in f.read()
    svc = service("localhost:1", cert_file=pki["client"], key_file=pki["client_enc_key"],
                  key_password_file=pki["client_enc_pass"])
    rc, errors, _text, _path = check_ini({"svc": svc})
    assert rc == 0 and not errors, errors

    srv = mtls_server(openssl_server, pki, "tls1_3")
    fwd = start_tlsfwd({"svc": dict(svc, upstream="localhost:%d" % srv.port)})
    s = client(fwd)
    page = www_fetch(s)
    assert page.startswith(b"HTTP/1.0 200 ok") and b"tlsfwd test client" in page, page[:200]
    hs = fwd.conn_of(s)
    assert hs["result"] == "ok" and CLIENT_CN in hs["client_cert"], hs


@pytest.mark.parametrize("layout", ["no_newline", "second_line"])
def test_password_file_first_line_only(layout, pki, service, check_ini, tmp_path):
    """key_password_file: the first line is the password (a missing final newline
    or further lines do not matter)."""
    pw = tmp_path / "pw"
    with open(pki["client_enc_pass"]) as f:
        password = f.readline().rstrip("\n")
    pw.write_text(password if layout == "no_newline" else password + "\nsomething else\n")
    os.chmod(pw, 0o600)
    svc = service("localhost:443", cert_file=pki["client"], key_file=pki["client_enc_key"],
                  key_password_file=str(pw))
    rc, errors, _text, _path = check_ini({"svc": svc})
    assert rc == 0 and not errors, errors


def _assert_one_error_at(errors, path, lines, words, rc):
    assert rc == 1, errors
    real = [e for e in errors if e[0] is not None]
    assert real, "no FILE:LINE: error in %r" % (errors,)
    assert all(e[0] == path for e in real), real
    hits = [e for e in real if e[1] in lines and any(w in e[2] for w in words)]
    assert hits, "want an error at line %s mentioning one of %r; got %r" % (lines, words, errors)


def test_wrong_password_fails_check(pki, service, check_ini, tmp_path, tlsfwd_bin):
    pw = tmp_path / "wrong.pass"
    pw.write_text("not the password\n")
    os.chmod(pw, 0o600)
    svc = service("localhost:443", cert_file=pki["client"], key_file=pki["client_enc_key"],
                  key_password_file=str(pw))
    rc, errors, text, path = check_ini({"svc": svc})
    _assert_one_error_at(errors, path, {ini_line(text, "svc", "key_file"),
                                        ini_line(text, "svc", "key_password_file")},
                         ("key_file", pki["client_enc_key"]), rc)
    # and the daemon itself refuses to start with it
    r = run_tlsfwd(tlsfwd_bin, ["-c", path])
    assert r.returncode == 1, r


def test_encrypted_key_without_password_fails_check(pki, service, check_ini):
    svc = service("localhost:443", cert_file=pki["client"], key_file=pki["client_enc_key"])
    rc, errors, text, path = check_ini({"svc": svc})
    _assert_one_error_at(errors, path, {ini_line(text, "svc", "key_file")},
                         ("key_file", pki["client_enc_key"]), rc)


def test_missing_key_file_fails_check(pki, service, check_ini, tmp_path):
    missing = str(tmp_path / "nope.key")
    svc = service("localhost:443", cert_file=pki["client"], key_file=missing)
    rc, errors, text, path = check_ini({"svc": svc})
    _assert_one_error_at(errors, path, {ini_line(text, "svc", "key_file")},
                         ("key_file", missing), rc)


def test_mismatched_cert_and_key_fail_check(pki, service, check_ini):
    svc = service("localhost:443", cert_file=pki["client"], key_file=pki["server_key"])
    rc, errors, text, path = check_ini({"svc": svc})
    _assert_one_error_at(errors, path, {ini_line(text, "svc", "key_file"),
                                        ini_line(text, "svc", "cert_file")},
                         ("key_file", "cert_file", "match"), rc)


def test_missing_cert_file_fails_check(pki, service, check_ini, tmp_path):
    missing = str(tmp_path / "nope.pem")
    svc = service("localhost:443", cert_file=missing, key_file=pki["client_key"])
    rc, errors, text, path = check_ini({"svc": svc})
    _assert_one_error_at(errors, path, {ini_line(text, "svc", "cert_file")},
                         ("cert_file", missing), rc)


@pytest.mark.parametrize("present", ["cert_file", "key_file"])
def test_cert_and_key_go_together(present, pki, service, check_ini):
    value = pki["client"] if present == "cert_file" else pki["client_key"]
    svc = service("localhost:443", **{present: value})
    rc, errors, text, path = check_ini({"svc": svc})
    assert rc == 1, errors
    real = [e for e in errors if e[0] is not None]
    assert real and all(e[0] == path for e in real), errors
    assert any(("cert_file" in e[2] and "key_file" in e[2])
               and e[1] in (ini_line(text, "svc", present), section_line(text, "svc"))
               for e in real), errors


def test_key_readable_by_others_is_warned(pki, service, start_tlsfwd, tmp_path):
    loose = tmp_path / "loose.key"
    tight = tmp_path / "tight.key"
    shutil.copyfile(pki["client_key"], loose)
    shutil.copyfile(pki["client_key"], tight)
    os.chmod(loose, 0o640)
    os.chmod(tight, 0o600)
    fwd = start_tlsfwd({
        "loose": service("localhost:443", cert_file=pki["client"], key_file=str(loose)),
        "tight": service("localhost:443", cert_file=pki["client"], key_file=str(tight)),
    })
    warns = [r for r in fwd.find("config", service="loose") if "readable" in r.get("msg", "")]
    assert warns, "no readable-key warning:\n" + fwd.log_text()
    assert warns[0]["level"] == "warn", warns
    assert "key_file" in warns[0]["msg"] or str(loose) in warns[0]["msg"], warns
    # a start-up warning: logged before readiness
    assert fwd.records.index(warns[0]) < fwd.records.index(fwd.find("ready")[0])
    assert not [r for r in fwd.find("config", service="tight")
                if "readable" in r.get("msg", "")], fwd.log_text()


def test_tls13_quiet_upstream_without_tickets_not_timed_out(pki, service, start_tlsfwd, client,
                                                           cleanup):
    """TLS 1.3 mTLS upstream that sends no session ticket and waits for the client
    to speak: tlsfwd waits for the upstream's verdict on the certificate, but that
    wait is not a handshake that can time out, and the connection then relays."""
    ctx = server_context(pki["server"], pki["server_key"], client_ca=pki["ca"])
    ctx.num_tickets = 0
    up = Upstream(echo_handler, ctx=ctx)
    cleanup.append(up)
    fwd = start_tlsfwd({"svc": service("localhost:%d" % up.port, cert_file=pki["client"],
                                       key_file=pki["client_key"],
                                       handshake_timeout="300ms")})
    s = client(fwd)
    time.sleep(0.6)     # the scenario: a quiet client for longer than handshake_timeout
    s.sendall(b"hello")
    assert recv_exact(s, 5) == b"hello"
    s.shutdown(socket.SHUT_WR)
    assert recv_all(s) == b""
    hs = fwd.conn_of(s)
    assert hs["result"] == "ok" and hs["version"] == "TLS1.3", hs
    assert CLIENT_CN in hs["client_cert"], hs
    cl = fwd.wait_close(hs["conn"])
    assert cl["reason"] == "done" and num(cl["bytes_up"]) == 5, cl


def _no_ticket_mtls_upstream(pki, cleanup, handler):
    """A TLS 1.3 upstream that requires our client certificate and, like slapd,
    sends no session ticket: its first record after our Finished is whatever
    the handler sends."""
    ctx = server_context(pki["server"], pki["server_key"], client_ca=pki["ca"])
    ctx.num_tickets = 0
    up = Upstream(handler, mode="bio", ctx=ctx)
    cleanup.append(up)
    return up


def _read_then_close_notify(bc):
    """Reads to the client's end (our close_notify), answers it with its own."""
    got = bc.recv_until_eof()
    bc.send_close_notify()
    bc.close()
    return got


@pytest.mark.parametrize("request_bytes", [b"\x30\x05\x02\x01\x01\x42\x00", b""],
                         ids=["unbind_and_leave", "health_check"])
def test_close_notify_as_first_answer_is_an_accepted_certificate(
        request_bytes, pki, cleanup, service, start_tlsfwd, client):
    """slapd with TLSVerifyClient demand: a client sends an LDAP UnbindRequest
    (or nothing, a TCP health check) and leaves. The upstream's first record
    after our Finished is the close_notify answering ours: it accepted our
    certificate (a refusal is an alert), so result=ok and a clean close, not
    result=fail GNUTLS_E_SESSION_EOF."""
    up = _no_ticket_mtls_upstream(pki, cleanup, _read_then_close_notify)
    fwd = start_tlsfwd({"svc": service(up.port, cert_file=pki["client"],
                                       key_file=pki["client_key"])})
    s = client(fwd)
    if request_bytes:
        s.sendall(request_bytes)
    s.shutdown(socket.SHUT_WR)
    assert recv_all(s) == b""
    assert up.result() == request_bytes
    hs = fwd.conn_of(s)
    assert (hs["result"], hs["version"], hs["level"]) == ("ok", "TLS1.3", "info"), hs
    assert CLIENT_CN in hs["client_cert"], hs
    cl = fwd.wait_close(hs["conn"])
    assert (cl["reason"], cl["level"]) == ("done", "info"), cl
    assert num(cl["bytes_up"]) == len(request_bytes), cl


def test_refusal_alert_is_read_after_our_send_meets_a_reset(pki, cleanup, service,
                                                           start_tlsfwd, client):
    """Redis with tls-auth-clients yes, tlsfwd without a certificate: the
    upstream sends certificate_required and closes while the client's first
    bytes are in flight; they meet a reset. The alert was sent first and is
    still readable: the line says result=alert, never fail/ECONNRESET. Timing
    decides which way the race goes, so many tries, one after another and
    together."""
    ctx = server_context(pki["server"], pki["server_key"], client_ca=pki["ca"])
    up = Upstream(lambda conn: None, mode="ssl", ctx=ctx)   # the handshake refuses
    cleanup.append(up)
    fwd = start_tlsfwd({"svc": service(up.port)})

    def one():
        s = socket.create_connection(("127.0.0.1", fwd.ports["svc"]), timeout=10)
        try:
            send_quiet(s, b"PING\r\n" * 200)
            recv_closed(s)
            return fwd.conn_of(s)
        finally:
            s.close()
    lines = [one() for _ in range(40)]
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        for _ in range(2):
            lines += list(pool.map(lambda _: one(), range(20)))
    outcomes = collections.Counter((hs["result"], hs.get("alert"), hs.get("errno"))
                                   for hs in lines)
    assert outcomes == {("alert", "certificate_required", None): len(lines)}, outcomes
