"""SPKI pins: pin_sha256 (repeatable), alone with verify = pin or on top of the
chain and hostname checks. Pins are computed from the certificates with the
openssl CLI (spki_pin)."""

import base64
import hashlib

import pytest

from harness.clients import assert_refused_through, www_fetch
from harness.config import ini_line
from harness.tlsinfo import spki_pin

# a well-formed pin that matches none of the test keys: base64(SHA-256(""))
OTHER_PIN = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="


def test_spki_pin_helper_matches_python(pki):
    """The CLI recipe gives a 44-character base64 of 32 bytes, distinct per key."""
    pin = spki_pin(pki["server"])
    assert len(base64.b64decode(pin, validate=True)) == 32
    assert pin != spki_pin(pki["selfsigned"]) and pin != OTHER_PIN


def test_matching_pin_with_full_verification(openssl_server, pki, service, start_tlsfwd,
                                             client):
    srv = openssl_server("server", "-www")
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port,
                                       pin_sha256=spki_pin(pki["server"]))})
    s = client(fwd)
    assert www_fetch(s).startswith(b"HTTP/1.0 200 ok")
    hs = fwd.conn_of(s)
    assert (hs["result"], hs["verify"], hs["pin"]) == ("ok", "ok", "ok"), hs


def test_no_pins_logs_dash(openssl_server, service, start_tlsfwd, client):
    srv = openssl_server("server", "-www")
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port)})
    s = client(fwd)
    assert www_fetch(s).startswith(b"HTTP/1.0 200 ok")
    hs = fwd.conn_of(s)
    assert (hs["result"], hs["pin"]) == ("ok", "-"), hs


MODE_CERT = {"full": "server", "chain": "wrong", "pin": "selfsigned"}


@pytest.mark.parametrize("mode", sorted(MODE_CERT))
def test_pin_mismatch_refused_and_reports_actual_pin(mode, openssl_server, pki, service,
                                                     start_tlsfwd, client):
    """A valid chain does not help against a wrong pin; the error names the
    upstream key's own pin so that an operator can compare or update it."""
    cert = MODE_CERT[mode]
    srv = openssl_server(cert, "-www")
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port, verify=mode,
                                       pin_sha256=OTHER_PIN)})
    s = client(fwd)
    hs, _cl = assert_refused_through(fwd, s)
    assert (hs["result"], hs["stage"], hs["verify"], hs["pin"]) == \
        ("fail", "verify", "fail", "fail"), hs
    assert hs["level"] == "warn", hs
    err = hs.get("error", "")
    assert "pin" in err.lower(), hs
    assert "sha256/" + spki_pin(pki[cert]) in err, hs
    assert hs.get("alert_sent") not in (None, "", "-"), hs


def test_pin_with_verify_chain(openssl_server, pki, service, start_tlsfwd, client):
    """verify = chain plus a matching pin: chain checked, hostname not, pin ok."""
    srv = openssl_server("wrong", "-www")
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port, verify="chain",
                                       pin_sha256=spki_pin(pki["wrong"]))})
    s = client(fwd)
    assert www_fetch(s).startswith(b"HTTP/1.0 200 ok")
    hs = fwd.conn_of(s)
    assert (hs["result"], hs["verify"], hs["pin"]) == ("ok", "chain", "ok"), hs


def test_pin_applies_to_the_leaf_only(openssl_server, pki, service, start_tlsfwd, client):
    """A pin of the issuing CA's key (sent in the chain) does not match: pins
    are of the upstream's own (leaf) key."""
    srv = openssl_server("server", "-www", chain="server_chain")
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port,
                                       pin_sha256=spki_pin(pki["ca"]))})
    hs, _ = assert_refused_through(fwd, client(fwd))
    assert (hs["result"], hs["stage"], hs["pin"]) == ("fail", "verify", "fail"), hs
    assert "sha256/" + spki_pin(pki["server"]) in hs["error"], hs


def test_backup_pin_accepted(openssl_server, pki, service, start_tlsfwd, client):
    """[old pin, new pin]: the second (backup/rotated) pin matches."""
    srv = openssl_server("server", "-www")
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port,
                                       pin_sha256=[OTHER_PIN, spki_pin(pki["server"])])})
    s = client(fwd)
    assert www_fetch(s).startswith(b"HTTP/1.0 200 ok")
    hs = fwd.conn_of(s)
    assert (hs["result"], hs["pin"]) == ("ok", "ok"), hs


def test_pin_in_the_logged_form_accepted(openssl_server, pki, service, start_tlsfwd, client):
    """The `sha256/BASE64` form that a mismatch error prints can be pasted back."""
    srv = openssl_server("server", "-www")
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port,
                                       pin_sha256="sha256/" + spki_pin(pki["server"]))})
    s = client(fwd)
    assert www_fetch(s).startswith(b"HTTP/1.0 200 ok")
    hs = fwd.conn_of(s)
    assert (hs["result"], hs["pin"]) == ("ok", "ok"), hs


def test_verify_pin_accepts_self_signed_upstream(openssl_server, pki, service, start_tlsfwd,
                                                 client):
    """verify = pin checks only the pin: a self-signed certificate, not in ca_file,
    is accepted when its key is pinned; the same upstream fails verify = full."""
    srv = openssl_server("selfsigned", "-www")
    srv2 = openssl_server("selfsigned", "-www")
    pin = spki_pin(pki["selfsigned"])
    fwd = start_tlsfwd({
        "pinned": service("localhost:%d" % srv.port, verify="pin", pin_sha256=pin),
        "full": service("localhost:%d" % srv2.port, pin_sha256=pin),
    })
    s = client(fwd, "pinned")
    assert www_fetch(s).startswith(b"HTTP/1.0 200 ok")
    hs = fwd.conn_of(s)
    assert (hs["result"], hs["pin"]) == ("ok", "ok"), hs
    assert hs["verify"] != "fail", hs
    assert "self-signed" in hs["peer"], hs
    assert not fwd.find("config", service="pinned", level="warn"), \
        "verify = pin with a pin is not insecure:\n" + fwd.log_text()

    hs2, _ = assert_refused_through(fwd, client(fwd, "full"))
    assert (hs2["result"], hs2["stage"], hs2["verify"]) == ("fail", "verify", "fail"), hs2
    assert "not trusted" in hs2["error"].lower(), hs2


def test_verify_pin_ignores_hostname_and_ca(openssl_server, pki, service, start_tlsfwd, client):
    """A certificate for another name from an untrusted CA passes on its pin alone."""
    srv = openssl_server("untrusted", "-www")
    fwd = start_tlsfwd({"svc": service("127.0.0.1:%d" % srv.port, verify="pin",
                                       sni="elsewhere.example", ca_file=pki["other_ca"],
                                       pin_sha256=spki_pin(pki["untrusted"]))})
    s = client(fwd)
    assert www_fetch(s).startswith(b"HTTP/1.0 200 ok")
    hs = fwd.conn_of(s)
    assert (hs["result"], hs["pin"]) == ("ok", "ok"), hs


BAD_PINS = {
    "not_base64": "not*base64!",
    "short_digest": base64.b64encode(hashlib.sha1(b"x").digest()).decode(),  # 20 bytes
    "hex": hashlib.sha256(b"x").hexdigest(),
}


@pytest.mark.parametrize("which", sorted(BAD_PINS))
def test_bad_pin_value_fails_check(which, service, check_ini):
    svc = service("localhost:443", pin_sha256=[OTHER_PIN, BAD_PINS[which]])
    rc, errors, text, path = check_ini({"svc": svc})
    assert rc == 1, errors
    want = ini_line(text, "svc", "pin_sha256", nth=1)
    assert [(e[0], e[1]) for e in errors] == [(path, want)], errors
    assert "pin_sha256" in errors[0][2], errors


def test_repeated_pins_pass_check(pki, service, check_ini):
    svc = service("localhost:443", pin_sha256=[OTHER_PIN, spki_pin(pki["server"])])
    rc, errors, _text, _path = check_ini({"svc": svc})
    assert rc == 0 and not errors, errors


def test_verify_pin_without_pins_fails_check(service, check_ini):
    """verify = pin with nothing to check would accept any certificate: refused."""
    rc, errors, text, path = check_ini({"svc": service("localhost:443", verify="pin")})
    assert rc == 1, errors
    assert errors and errors[0][0] == path, errors
    assert any("pin" in e[2] for e in errors), errors
