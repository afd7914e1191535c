"""Revocation: stapled OCSP responses (ocsp = off | try | require, must-staple)
and CRLs (crl_file).

OCSP responses are built at PKI time by `openssl ocsp -index` with a delegated
responder (ocsp.pem, extendedKeyUsage OCSPSigning) and stapled by
`openssl s_server -status_file`."""

import pytest

from harness.clients import assert_refused_through, www_fetch
from harness.config import ini_line
from harness.tlsinfo import EXT_STATUS_REQUEST, read_client_hello

VERSIONS = ["tls1_3", "tls1_2"]


def ok_through(fwd, s):
    page = www_fetch(s)
    assert page.startswith(b"HTTP/1.0 200 ok"), page[:200]
    hs = fwd.conn_of(s)
    assert hs["result"] == "ok", hs
    return hs


def stapling(openssl_server, pki, cert, response, *extra):
    return openssl_server(cert, "-www", "-status_file", pki[response], *extra)


# -- OCSP ----------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("ocsp", [None, "try", "require"])
def test_good_staple_checked(ocsp, version, openssl_server, pki, service, start_tlsfwd, client):
    srv = stapling(openssl_server, pki, "server", "ocsp_good", "-" + version)
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port, ocsp=ocsp)})
    hs = ok_through(fwd, client(fwd))
    assert (hs["ocsp"], hs["verify"]) == ("good", "ok"), hs


def test_status_request_sent_unless_off(raw_upstream, service, start_tlsfwd, client):
    """tlsfwd asks for a staple (status_request extension) with try/require."""
    seen = {}
    for mode in ("try", "require", "off"):
        up = raw_upstream(read_client_hello)
        fwd = start_tlsfwd({"svc": service("localhost:%d" % up.port, ocsp=mode)})
        assert_refused_through(fwd, client(fwd))
        seen[mode] = EXT_STATUS_REQUEST in up.result()
    assert seen["try"] and seen["require"], seen


def test_no_staple_is_fine_with_try(openssl_server, service, start_tlsfwd, client):
    srv = openssl_server("server", "-www")
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port)})   # default: try
    hs = ok_through(fwd, client(fwd))
    assert hs["ocsp"] == "none", hs


def test_ocsp_off_logs_off(openssl_server, pki, service, start_tlsfwd, client):
    srv = stapling(openssl_server, pki, "server", "ocsp_good")
    srv2 = openssl_server("server", "-www")
    fwd = start_tlsfwd({"staple": service("localhost:%d" % srv.port, ocsp="off"),
                        "plain": service("localhost:%d" % srv2.port, ocsp="off")})
    for name in ("staple", "plain"):
        hs = ok_through(fwd, client(fwd, name))
        assert hs["ocsp"] == "off", hs


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("ocsp", ["try", "require"])
def test_revoked_staple_refused(ocsp, version, openssl_server, pki, service, start_tlsfwd,
                                client):
    srv = stapling(openssl_server, pki, "server", "ocsp_revoked", "-" + version)
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port, ocsp=ocsp)})
    hs, _ = assert_refused_through(fwd, client(fwd))
    assert (hs["result"], hs["stage"], hs["verify"], hs["ocsp"]) == \
        ("fail", "verify", "fail", "revoked"), hs
    assert "revoked" in hs.get("error", "").lower(), hs
    assert hs["level"] == "warn", hs


def test_require_without_staple_refused(openssl_server, service, start_tlsfwd, client):
    srv = openssl_server("server", "-www")
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port, ocsp="require")})
    hs, _ = assert_refused_through(fwd, client(fwd))
    assert (hs["result"], hs["stage"], hs["ocsp"]) == ("fail", "verify", "none"), hs
    assert "OCSP" in hs.get("error", ""), hs


def test_staple_for_another_certificate_not_good(openssl_server, pki, service, start_tlsfwd,
                                                 client):
    """A (good) response about a different certificate proves nothing: with
    require the connection is refused."""
    srv = stapling(openssl_server, pki, "server", "ocsp_muststaple_good")
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port, ocsp="require")})
    hs, _ = assert_refused_through(fwd, client(fwd))
    assert (hs["result"], hs["stage"]) == ("fail", "verify"), hs
    assert hs["ocsp"] != "good", hs


@pytest.mark.parametrize("ocsp", ["try", "off"])
def test_must_staple_without_staple_refused(ocsp, openssl_server, service, start_tlsfwd,
                                            client):
    srv = openssl_server("muststaple", "-www")
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port, ocsp=ocsp)})
    hs, _ = assert_refused_through(fwd, client(fwd))
    assert (hs["result"], hs["stage"], hs["verify"]) == ("fail", "verify", "fail"), hs
    assert hs.get("error"), hs


def test_must_staple_with_good_staple_accepted(openssl_server, pki, service, start_tlsfwd,
                                               client):
    srv = stapling(openssl_server, pki, "muststaple", "ocsp_muststaple_good")
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port)})
    hs = ok_through(fwd, client(fwd))
    assert hs["ocsp"] == "good", hs
    assert "must-staple" in hs["peer"], hs


def test_bad_ocsp_value_fails_check(service, check_ini):
    rc, errors, text, path = check_ini({"svc": service("localhost:443", ocsp="sometimes")})
    assert rc == 1, errors
    assert [(e[0], e[1]) for e in errors] == [(path, ini_line(text, "svc", "ocsp"))], errors
    assert "ocsp" in errors[0][2], errors


# -- CRL -----------------------------------------------------------------------

def test_crl_refuses_listed_certificate(openssl_server, pki, service, start_tlsfwd, client):
    revoked = openssl_server("revoked", "-www")
    good = openssl_server("server", "-www")
    unchecked = openssl_server("revoked", "-www")
    fwd = start_tlsfwd({
        "revoked": service("localhost:%d" % revoked.port, crl_file=pki["crl"]),
        "good": service("localhost:%d" % good.port, crl_file=pki["crl"]),
        "nocrl": service("localhost:%d" % unchecked.port),
    })
    hs, _ = assert_refused_through(fwd, client(fwd, "revoked"))
    assert (hs["result"], hs["stage"], hs["verify"]) == ("fail", "verify", "fail"), hs
    assert "revoked" in hs.get("error", "").lower(), hs
    assert hs.get("alert_sent") not in (None, "", "-"), hs

    hs = ok_through(fwd, client(fwd, "good"))
    assert hs["verify"] == "ok", hs

    # without crl_file the same certificate is fine (the CRL is what refused it)
    hs = ok_through(fwd, client(fwd, "nocrl"))
    assert "revoked" in hs["peer"], hs


def test_crl_file_passes_check(pki, service, check_ini):
    rc, errors, _text, _path = check_ini({"svc": service("localhost:443", crl_file=pki["crl"])})
    assert rc == 0 and not errors, errors


@pytest.mark.parametrize("what", ["missing", "garbage"])
def test_bad_crl_file_fails_check(what, service, check_ini, tmp_path, pki):
    path_crl = tmp_path / "bad.crl"
    if what == "garbage":
        # a certificate is not a CRL
        path_crl.write_text(open(pki["server"]).read())
    rc, errors, text, path = check_ini({"svc": service("localhost:443", crl_file=str(path_crl))})
    assert rc == 1, errors
    assert [(e[0], e[1]) for e in errors] == [(path, ini_line(text, "svc", "crl_file"))], errors
    assert "crl_file" in errors[0][2], errors
