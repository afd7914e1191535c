"""ALPN: alpn (offered in order), alpn_required, and the handshake line's alpn=."""

import pytest

from harness.clients import assert_refused_through, www_fetch
from harness.config import ini_line, section_line
from harness.tlsinfo import alpn_offered, read_client_hello


def hello_capture(raw_upstream):
    """A raw upstream that records the ClientHello's extensions and hangs up."""
    def handler(conn):
        return read_client_hello(conn)
    return raw_upstream(handler)


@pytest.mark.parametrize("alpn,offered", [
    ("h2,http/1.1", ["h2", "http/1.1"]),
    ("http/1.1,h2", ["http/1.1", "h2"]),
    ("x-custom", ["x-custom"]),
])
def test_protocols_offered_in_order(alpn, offered, raw_upstream, service, start_tlsfwd, client):
    up = hello_capture(raw_upstream)
    fwd = start_tlsfwd({"svc": service("localhost:%d" % up.port, alpn=alpn)})
    s = client(fwd)
    exts = up.result()
    assert alpn_offered(exts) == offered, exts
    assert_refused_through(fwd, s)   # the capture hangs up: a failed handshake


def test_no_alpn_extension_without_alpn(raw_upstream, service, start_tlsfwd, client):
    up = hello_capture(raw_upstream)
    fwd = start_tlsfwd({"svc": service("localhost:%d" % up.port)})
    s = client(fwd)
    exts = up.result()
    assert alpn_offered(exts) is None, exts
    assert_refused_through(fwd, s)


@pytest.mark.parametrize("server_alpn,selected", [("http/1.1", "http/1.1"),
                                                  ("h2,http/1.1", "h2")])
def test_selected_protocol_logged(server_alpn, selected, openssl_server, service,
                                  start_tlsfwd, client):
    srv = openssl_server("server", "-www", "-alpn", server_alpn)
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port, alpn="h2,http/1.1",
                                       alpn_required="yes")})
    s = client(fwd)
    assert www_fetch(s).startswith(b"HTTP/1.0 200 ok")
    hs = fwd.conn_of(s)
    assert (hs["result"], hs["alpn"]) == ("ok", selected), hs


def test_alpn_not_configured_logs_dash(openssl_server, service, start_tlsfwd, client):
    srv = openssl_server("server", "-www", "-alpn", "http/1.1")
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port)})
    s = client(fwd)
    assert www_fetch(s).startswith(b"HTTP/1.0 200 ok")
    hs = fwd.conn_of(s)
    assert (hs["result"], hs["alpn"]) == ("ok", "-"), hs


def test_alpn_required_fails_when_upstream_selects_none(openssl_server, service, start_tlsfwd,
                                                        client):
    srv = openssl_server("server", "-www")           # no ALPN support at all
    srv2 = openssl_server("server", "-www")
    fwd = start_tlsfwd({
        "required": service("localhost:%d" % srv.port, alpn="h2,http/1.1",
                            alpn_required="yes"),
        "optional": service("localhost:%d" % srv2.port, alpn="h2,http/1.1",
                            alpn_required="no"),
    })
    s = client(fwd, "required")
    hs, _cl = assert_refused_through(fwd, s)
    assert (hs["result"], hs["stage"]) == ("fail", "handshake"), hs
    assert hs["level"] == "warn", hs
    assert "ALPN" in hs.get("error", ""), hs

    s2 = client(fwd, "optional")
    assert www_fetch(s2).startswith(b"HTTP/1.0 200 ok")
    hs2 = fwd.conn_of(s2)
    assert (hs2["result"], hs2["alpn"]) == ("ok", "-"), hs2


def test_alpn_required_default_is_no(openssl_server, service, start_tlsfwd, client):
    srv = openssl_server("server", "-www")
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port, alpn="h2")})
    s = client(fwd)
    assert www_fetch(s).startswith(b"HTTP/1.0 200 ok")
    hs = fwd.conn_of(s)
    assert (hs["result"], hs["alpn"]) == ("ok", "-"), hs


@pytest.mark.parametrize("opts,key", [
    ({"alpn_required": "often", "alpn": "h2"}, "alpn_required"),
    ({"alpn": "h2,"}, "alpn"),
    ({"alpn": ","}, "alpn"),
])
def test_bad_alpn_values_fail_check(opts, key, service, check_ini):
    rc, errors, text, path = check_ini({"svc": service("localhost:443", **opts)})
    assert rc == 1, errors
    assert [(e[0], e[1]) for e in errors] == [(path, ini_line(text, "svc", key))], errors
    assert key in errors[0][2], errors


def test_alpn_required_without_alpn_fails_check(service, check_ini):
    rc, errors, text, path = check_ini({"svc": service("localhost:443", alpn_required="yes")})
    assert rc == 1, errors
    assert len(errors) == 1 and errors[0][0] == path, errors
    assert errors[0][1] in (section_line(text, "svc"),
                            ini_line(text, "svc", "alpn_required")), errors
    assert "alpn" in errors[0][2], errors
