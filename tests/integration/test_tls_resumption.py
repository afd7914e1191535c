"""Session resumption: session_cache (default on; on/yes, off/no), per service and
upstream address.

The upstream is `openssl s_server -www`, whose status page starts its session
summary with `New,` or `Reused,`: the server's own word on whether the
connection resumed a session, compared with tlsfwd's `resumed=`."""

import re

import pytest

from harness.clients import assert_refused_through, connect, www_fetch
from harness.config import ini_line
from harness.tlsinfo import spki_pin
from harness.upstreams import OpenSSLServer

MODES = {
    "tls13_ticket": (),
    "tls12_ticket": ("-tls1_2",),
    "tls12_session_id": ("-tls1_2", "-no_ticket"),
}


def server_said(page):
    m = re.search(rb"^(New|Reused), (TLSv1\.[23])", page, re.M)
    assert m, "no New/Reused line in the s_server page:\n%r" % page[:1500]
    return m.group(1).decode(), m.group(2).decode()


def one(fwd, service="svc"):
    s = connect(fwd.ports[service])
    fwd.clients.append(s)
    page = www_fetch(s)
    assert page.startswith(b"HTTP/1.0 200 ok"), page[:200]
    hs = fwd.conn_of(s)
    fwd.wait_close(hs["conn"])
    assert hs["result"] == "ok", hs
    return hs, server_said(page)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_second_connection_resumes(mode, openssl_server, service, start_tlsfwd):
    srv = openssl_server("server", "-www", *MODES[mode])
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port)})
    want_version = "TLS1.3" if mode.startswith("tls13") else "TLS1.2"

    hs1, said1 = one(fwd)
    assert (hs1["resumed"], hs1["version"]) == ("no", want_version), hs1
    assert said1[0] == "New", said1
    assert hs1["ocsp"] == "none" and hs1["verify"] == "ok", hs1

    hs2, said2 = one(fwd)
    assert said2[0] == "Reused", "the upstream did not see a resumption: %r / %r" % (said2, hs2)
    assert (hs2["resumed"], hs2["version"]) == ("yes", want_version), hs2
    # the checks ran when the session was made
    assert hs2["ocsp"] == "resumed", hs2

    hs3, said3 = one(fwd)
    assert (hs3["resumed"], said3[0]) == ("yes", "Reused"), hs3


@pytest.mark.parametrize("word", ["off", "no"])
def test_session_cache_off(word, openssl_server, service, start_tlsfwd):
    srv = openssl_server("server", "-www")
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port, session_cache=word)})
    for _ in range(2):
        hs, said = one(fwd)
        assert (hs["resumed"], said[0]) == ("no", "New"), (hs, said)


@pytest.mark.parametrize("word", ["on", "off", "yes", "no"])
def test_session_cache_values_pass_check(word, service, check_ini):
    """The brief spells the values on|off, README.md yes|no."""
    rc, errors, _text, _path = check_ini({"svc": service("localhost:443", session_cache=word)})
    assert rc == 0 and not errors, errors


def test_session_cache_bad_value_fails_check(service, check_ini):
    rc, errors, text, path = check_ini({"svc": service("localhost:443", session_cache="maybe")})
    assert rc == 1, errors
    assert [(e[0], e[1]) for e in errors] == [(path, ini_line(text, "svc", "session_cache"))]
    assert "session_cache" in errors[0][2], errors


def test_sessions_are_per_service(openssl_server, service, start_tlsfwd):
    """Two services to the same upstream do not share sessions."""
    srv = openssl_server("server", "-www")
    up = "localhost:%d" % srv.port
    fwd = start_tlsfwd({"a": service(up), "b": service(up)})
    hs, said = one(fwd, "a")
    assert (hs["resumed"], said[0]) == ("no", "New"), hs
    hs, said = one(fwd, "b")
    assert (hs["resumed"], said[0]) == ("no", "New"), hs
    hs, said = one(fwd, "a")
    assert (hs["resumed"], said[0]) == ("yes", "Reused"), hs
    hs, said = one(fwd, "b")
    assert (hs["resumed"], said[0]) == ("yes", "Reused"), hs


def test_resumed_pinned_session_reports_pin_resumed(openssl_server, pki, service, start_tlsfwd):
    srv = openssl_server("server", "-www")
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port,
                                       pin_sha256=spki_pin(pki["server"]))})
    hs1, _ = one(fwd)
    assert (hs1["resumed"], hs1["pin"]) == ("no", "ok"), hs1
    hs2, said2 = one(fwd)
    assert (hs2["resumed"], said2[0]) == ("yes", "Reused"), hs2
    assert hs2["pin"] == "resumed", hs2


def test_stale_session_falls_back_to_full_handshake(openssl_server, pki, service, start_tlsfwd,
                                                   cleanup):
    """Restarting the upstream (new ticket keys, empty cache): the stale session is
    refused by the server and tlsfwd does a full handshake (resumed=no), with no
    failed connection."""
    srv = openssl_server("server", "-www")
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port)})
    one(fwd)
    hs2, _ = one(fwd)
    assert hs2["resumed"] == "yes", hs2
    port = srv.port
    srv.close()
    # the same address (the port tlsfwd is configured with, just released)
    srv2 = OpenSSLServer(pki["server"], pki["server_key"], "-www", accept=port)
    cleanup.append(srv2)
    hs3, said3 = one(fwd)
    assert (hs3["resumed"], said3[0]) == ("no", "New"), hs3


def test_resumed_session_keeps_alpn(openssl_server, service, start_tlsfwd):
    srv = openssl_server("server", "-www", "-alpn", "http/1.1")
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port, alpn="h2,http/1.1",
                                       alpn_required="yes")})
    hs1, _ = one(fwd)
    hs2, said2 = one(fwd)
    assert (hs1["resumed"], hs1["alpn"]) == ("no", "http/1.1"), hs1
    assert (hs2["resumed"], said2[0], hs2["alpn"]) == ("yes", "Reused", "http/1.1"), hs2


REFUSED_FIRST = {
    "pin_mismatch": ("server", (), {"pin_sha256": "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="}),
    "untrusted": ("untrusted", (), {}),
    "revoked_staple": ("server", ("-status_file", "ocsp_revoked"), {}),
}


@pytest.mark.parametrize("case", sorted(REFUSED_FIRST))
def test_refused_handshake_leaves_nothing_to_resume(case, openssl_server, pki, service,
                                                    start_tlsfwd, client):
    """A session whose verification failed must never be resumed (that would skip
    the checks): every connection is refused the same way."""
    cert, extra, opts = REFUSED_FIRST[case]
    extra = [pki[e] if e in pki else e for e in extra]
    srv = openssl_server(cert, "-www", *extra)
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port, **opts)})
    for _ in range(3):
        hs, _cl = assert_refused_through(fwd, client(fwd))
        assert (hs["result"], hs["stage"]) == ("fail", "verify"), hs
        assert hs.get("resumed") != "yes", hs
