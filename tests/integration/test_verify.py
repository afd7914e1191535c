"""Certificate verification against `openssl s_server` upstreams."""

import socket

import pytest

from harness.clients import recv_all, recv_closed, send_quiet
from harness.logfmt import num
from harness.upstreams import localhost_addresses

REQUEST = b"GET / HTTP/1.0\r\n\r\n"

# cert name in the PKI -> words one of which the `error` field must contain
REFUSED = [
    ("untrusted", ("not trusted",)),
    ("selfsigned", ("not trusted",)),
    ("wrong", ("does not match", "hostname")),
    ("expired", ("expired",)),
    ("inter_server", ("not trusted",)),   # leaf whose intermediate is not sent
]


def fetch(s):
    """HTTP/1.0 GET through tlsfwd to an `s_server -www`; the client then closes its
    side as HTTP/1.0 clients do (s_server serves one connection at a time)."""
    s.sendall(REQUEST)
    page = recv_all(s)
    s.shutdown(socket.SHUT_WR)
    return page


def assert_refused(fwd, s, srv=None):
    """The client gets no upstream byte and a closed connection; return (hs, close)."""
    send_quiet(s, REQUEST)
    data, how = recv_closed(s)
    assert data == b"", "upstream bytes were relayed despite a failed verification: %r" % data[:80]
    hs = fwd.conn_of(s)
    cl = fwd.wait_close(hs["conn"])
    assert cl["reason"] == "handshake_failed", cl
    assert num(cl["bytes_down"]) == 0, cl
    return hs, cl


@pytest.mark.parametrize("cert,words", REFUSED, ids=[c for c, _ in REFUSED])
def test_bad_certificate_refused(cert, words, openssl_server, service, start_tlsfwd, client):
    srv = openssl_server(cert, "-www")
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port)})
    s = client(fwd)
    hs, _ = assert_refused(fwd, s)
    assert hs["level"] == "warn", hs
    assert hs["result"] == "fail", hs
    assert hs["stage"] == "verify", hs
    assert hs["verify"] == "fail", hs
    assert hs["sni"] == "localhost", hs
    # every localhost address refused its certificate in turn: the line is
    # about the last one, each earlier one had an event=attempt line
    last = localhost_addresses()[-1]
    assert hs["upstream"] == ("[%s]:%d" if ":" in last else "%s:%d") % (last, srv.port), hs
    assert num(hs["attempts"]) == len(localhost_addresses()), hs
    assert len(fwd.find("attempt", conn=hs["conn"])) == len(localhost_addresses()) - 1
    err = hs.get("error", "")
    assert any(w in err.lower() for w in words), "error=%r should mention %r" % (err, words)
    if cert != "expired":
        assert "expired" not in err.lower(), err
    assert hs.get("alert_sent") not in (None, "", "-"), hs
    # the upstream must really have received the alert tlsfwd says it sent
    srv.wait_line("alert " + hs["alert_sent"].replace("_", " "))


def test_system_trust_store_does_not_trust_test_ca(openssl_server, service, start_tlsfwd,
                                                   client):
    srv = openssl_server("server", "-www")
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port, ca_file=None)})
    s = client(fwd)
    hs, _ = assert_refused(fwd, s)
    assert (hs["result"], hs["stage"], hs["verify"]) == ("fail", "verify", "fail"), hs
    assert "not trusted" in hs["error"].lower(), hs


def test_verify_chain_accepts_wrong_hostname(openssl_server, service, start_tlsfwd, client):
    srv = openssl_server("wrong", "-www")
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port, verify="chain")})
    s = client(fwd)
    page = fetch(s)
    assert page.startswith(b"HTTP/1.0 200 ok"), page[:100]
    hs = fwd.conn_of(s)
    assert hs["result"] == "ok", hs
    assert hs["verify"] == "chain", hs
    assert "CN=wrong.example" in hs["peer"], hs


def test_verify_chain_still_rejects_untrusted(openssl_server, service, start_tlsfwd, client):
    srv = openssl_server("untrusted", "-www")
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port, verify="chain")})
    hs, _ = assert_refused(fwd, client(fwd))
    assert (hs["result"], hs["stage"], hs["verify"]) == ("fail", "verify", "fail"), hs


def test_verify_none_accepts_self_signed_and_warns(openssl_server, service, start_tlsfwd,
                                                   client):
    srv = openssl_server("selfsigned", "-www")
    srv2 = openssl_server("selfsigned", "-www")
    fwd = start_tlsfwd({"insecure": service("localhost:%d" % srv.port, verify="none"),
                        "checked": service("localhost:%d" % srv2.port)})
    warns = fwd.find("config", service="insecure")
    assert warns and all(w["level"] == "warn" for w in warns), fwd.log_text()
    assert not fwd.find("config", service="checked"), "warning for a verified service"
    # start-up warnings come before readiness
    assert fwd.records.index(warns[0]) < fwd.records.index(fwd.find("ready")[0])

    s = client(fwd, "insecure")
    assert fetch(s).startswith(b"HTTP/1.0 200 ok")
    hs = fwd.conn_of(s)
    assert hs["result"] == "ok", hs
    assert hs["verify"] == "off", hs
    assert "self-signed" in hs["peer"], hs

    s2 = client(fwd, "checked")
    hs2, _ = assert_refused(fwd, s2)
    assert hs2.get("verify") == "fail", hs2


def test_verify_hostname_override(openssl_server, service, start_tlsfwd, client):
    srv = openssl_server("wrong", "-www")
    srv2 = openssl_server("wrong", "-www")
    good = openssl_server("server", "-www")
    fwd = start_tlsfwd({
        # cert is for wrong.example; SNI stays localhost, the check uses verify_hostname
        "ok": service("localhost:%d" % srv.port, verify_hostname="wrong.example"),
        # good cert, but we demand another name
        "bad": service("localhost:%d" % good.port, verify_hostname="other.example"),
        # sni also sets the name to verify when verify_hostname is not given
        "bysni": service("127.0.0.1:%d" % srv2.port, sni="wrong.example"),
    })
    s = client(fwd, "ok")
    assert fetch(s).startswith(b"HTTP/1.0 200 ok")
    hs = fwd.conn_of(s)
    assert (hs["result"], hs["verify"], hs["sni"]) == ("ok", "ok", "localhost"), hs

    hs_bad, _ = assert_refused(fwd, client(fwd, "bad"))
    assert (hs_bad["result"], hs_bad["stage"]) == ("fail", "verify"), hs_bad

    s3 = client(fwd, "bysni")
    assert fetch(s3).startswith(b"HTTP/1.0 200 ok")
    hs3 = fwd.conn_of(s3)
    assert (hs3["result"], hs3["verify"], hs3["sni"]) == ("ok", "ok", "wrong.example"), hs3


def test_ip_san_verified_without_sni(openssl_server, service, start_tlsfwd, client):
    srv = openssl_server("server", "-www")
    wrong = openssl_server("wrong", "-www")
    fwd = start_tlsfwd({"ip": service("127.0.0.1:%d" % srv.port),
                        "ipwrong": service("127.0.0.1:%d" % wrong.port)})
    s = client(fwd, "ip")
    assert fetch(s).startswith(b"HTTP/1.0 200 ok")
    hs = fwd.conn_of(s)
    assert (hs["result"], hs["verify"], hs["sni"]) == ("ok", "ok", "-"), hs
    hs2, _ = assert_refused(fwd, client(fwd, "ipwrong"))
    assert hs2["stage"] == "verify", hs2
