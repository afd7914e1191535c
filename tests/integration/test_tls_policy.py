"""Protocol policy: tls_min_version, tls_max_version, tls_priority, and the
default policy (TLS 1.2+, AEAD ciphers only)."""

import pytest

from harness.clients import assert_refused_through, www_fetch
from harness.config import ini_line, section_line
from harness.tlsinfo import read_client_hello


def ok_through(fwd, s):
    page = www_fetch(s)
    assert page.startswith(b"HTTP/1.0 200 ok"), page[:200]
    hs = fwd.conn_of(s)
    assert hs["result"] == "ok", hs
    return hs, page


def test_default_range_negotiates_tls13(openssl_server, service, start_tlsfwd, client):
    srv = openssl_server("server", "-www")
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port)})
    hs, page = ok_through(fwd, client(fwd))
    assert hs["version"] == "TLS1.3", hs
    assert b"TLSv1.3" in page


@pytest.mark.parametrize("extra,version,page_cipher", [
    ((), "TLS1.3", b"TLS_AES_128_GCM_SHA256"),
    (("-tls1_2",), "TLS1.2", b"ECDHE-ECDSA-AES128-GCM-SHA256"),
])
def test_default_policy_offers_aes128_gcm_first(extra, version, page_cipher, openssl_server,
                                                service, start_tlsfwd, client):
    """A server that follows the client's order (OpenSSL's and nginx's
    default) gets AES-128-GCM: the SHA-256 key schedule, not SHA-384."""
    srv = openssl_server("server", "-www", *extra)
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port)})
    hs, page = ok_through(fwd, client(fwd))
    assert (hs["version"], hs["cipher"]) == (version, "AES-128-GCM"), hs
    assert page_cipher in page, page[:600]


def test_default_range_accepts_tls12_server(openssl_server, service, start_tlsfwd, client):
    srv = openssl_server("server", "-www", "-tls1_2")
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port)})
    hs, page = ok_through(fwd, client(fwd))
    assert hs["version"] == "TLS1.2", hs
    assert b"TLSv1.2" in page


def test_max_version_tls12_against_tls13_server(openssl_server, service, start_tlsfwd, client):
    srv = openssl_server("server", "-www")
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port, tls_max_version="TLS1.2")})
    hs, page = ok_through(fwd, client(fwd))
    assert hs["version"] == "TLS1.2", hs
    assert b"TLSv1.2" in page     # what the upstream says it negotiated


def test_min_version_tls13_refuses_tls12_only_server(openssl_server, service, start_tlsfwd,
                                                     client):
    srv = openssl_server("server", "-www", "-tls1_2")
    srv13 = openssl_server("server", "-www")
    fwd = start_tlsfwd({
        "svc": service("localhost:%d" % srv.port, tls_min_version="TLS1.3"),
        "ok13": service("localhost:%d" % srv13.port, tls_min_version="TLS1.3"),
    })
    hs, _cl = assert_refused_through(fwd, client(fwd))
    assert hs["level"] == "warn", hs
    assert hs["result"] in ("alert", "fail"), hs
    if hs["result"] == "alert":
        assert (hs["alert"], hs["alert_from"]) == ("protocol_version", "upstream"), hs
    else:
        assert hs["stage"] == "handshake", hs
        assert any(w in hs.get("error", "").lower() for w in ("version", "protocol")), hs

    hs13, _ = ok_through(fwd, client(fwd, "ok13"))
    assert hs13["version"] == "TLS1.3", hs13


def test_max_version_tls12_refuses_tls13_only_server(openssl_server, service, start_tlsfwd,
                                                     client):
    srv = openssl_server("server", "-www", "-tls1_3")
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port, tls_max_version="TLS1.2")})
    hs, _cl = assert_refused_through(fwd, client(fwd))
    assert hs["result"] in ("alert", "fail"), hs
    if hs["result"] == "alert":
        assert hs["alert"] == "protocol_version", hs


def test_default_policy_refuses_cbc_only_server(openssl_server, service, start_tlsfwd, client):
    """AEAD only by default: an upstream offering only CBC-mode suites is refused;
    tls_priority = NORMAL (GnuTLS' own default) accepts it."""
    cbc = ("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA")
    srv = openssl_server("server", "-www", *cbc)
    srv2 = openssl_server("server", "-www", *cbc)
    fwd = start_tlsfwd({
        "strict": service("localhost:%d" % srv.port),
        "normal": service("localhost:%d" % srv2.port, tls_priority="NORMAL"),
    })
    hs, _ = assert_refused_through(fwd, client(fwd, "strict"))
    assert hs["result"] in ("alert", "fail"), hs
    if hs["result"] == "alert":
        assert hs["alert_from"] == "upstream", hs

    hs2, _ = ok_through(fwd, client(fwd, "normal"))
    assert hs2["version"] == "TLS1.2", hs2
    assert "CBC" in hs2["cipher"], hs2


def test_priority_string_selects_cipher(openssl_server, service, start_tlsfwd, client):
    srv = openssl_server("server", "-www")
    prio = "NORMAL:-VERS-ALL:+VERS-TLS1.2:-CIPHER-ALL:+CHACHA20-POLY1305"
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port, tls_priority=prio)})
    hs, page = ok_through(fwd, client(fwd))
    assert hs["version"] == "TLS1.2", hs
    assert "CHACHA20" in hs["cipher"], hs
    assert b"CHACHA20" in page


def _one_error(errors, path, lines, words):
    assert errors and all(e[0] == path for e in errors), errors
    assert len(errors) == 1, errors
    assert errors[0][1] in lines, (errors, lines)
    assert all(w in errors[0][2] for w in words), (errors, words)


def test_invalid_priority_fails_check_naming_the_bad_part(service, check_ini):
    rc, errors, text, path = check_ini({"svc": service("localhost:443",
                                                       tls_priority="NORMAL:+BOGUS")})
    assert rc == 1, errors
    _one_error(errors, path, {ini_line(text, "svc", "tls_priority")},
               ("tls_priority", "BOGUS"))


@pytest.mark.parametrize("key,value", [("tls_min_version", "TLS1.1"),
                                       ("tls_max_version", "1.3"),
                                       ("tls_min_version", "tls13x")])
def test_bad_version_word_fails_check(key, value, service, check_ini):
    rc, errors, text, path = check_ini({"svc": service("localhost:443", **{key: value})})
    assert rc == 1, errors
    _one_error(errors, path, {ini_line(text, "svc", key)}, (key,))


def test_min_above_max_fails_check(service, check_ini):
    rc, errors, text, path = check_ini({"svc": service("localhost:443", tls_min_version="TLS1.3",
                                                       tls_max_version="TLS1.2")})
    assert rc == 1, errors
    _one_error(errors, path, {section_line(text, "svc"),
                              ini_line(text, "svc", "tls_min_version"),
                              ini_line(text, "svc", "tls_max_version")},
               ("tls_min_version",))


def test_good_policy_values_pass_check(service, check_ini):
    rc, errors, _text, _path = check_ini({
        "a": service("localhost:443", tls_min_version="TLS1.3", tls_max_version="TLS1.3"),
        "b": service("localhost:443", listen="127.0.0.1:1", tls_min_version="TLS1.2",
                     tls_max_version="TLS1.2"),
        "c": service("localhost:443", listen="127.0.0.1:2", tls_priority="SECURE256"),
        "d": service("localhost:443", listen="127.0.0.1:3",
                     tls_priority="SECURE256:-VERS-ALL:+VERS-TLS1.3:%PROFILE_HIGH"),
    })
    assert rc == 0, errors
    # SECURE256 takes back finite-field DHE, CBC and the 112-bit key floor: said
    # as a warning on its tls_priority line; d gives up nothing
    assert [(ln, m.split(":")[0]) for _f, ln, m in errors] == [
        (ini_line(_text, "c", "tls_priority"), "warning")], errors
    msg = errors[0][2]
    for word in ("[c]", "DHE-RSA", "CBC", "%PROFILE_MEDIUM"):
        assert word in msg, msg


EXT_SUPPORTED_GROUPS = 10
EXT_KEY_SHARE = 51
X25519, SECP256R1 = 0x001D, 0x0017


def key_share_groups(exts):
    """The groups of a ClientHello's key_share entries, in order."""
    data = exts[EXT_KEY_SHARE]
    groups, i = [], 2
    while i < len(data):
        groups.append(int.from_bytes(data[i:i + 2], "big"))
        i += 4 + int.from_bytes(data[i + 2:i + 4], "big")
    return groups


def test_default_sends_one_x25519_key_share(raw_upstream, service, start_tlsfwd, client):
    """One key pair per handshake, X25519 (GnuTLS alone would make two: a
    third of a resumed handshake's cost, see bench/results/profile.md)."""
    up = raw_upstream(read_client_hello)
    fwd = start_tlsfwd({"svc": service("localhost:%d" % up.port)})
    s = client(fwd)
    exts = up.result()
    assert key_share_groups(exts) == [X25519], exts.get(EXT_KEY_SHARE)
    groups = exts[EXT_SUPPORTED_GROUPS]
    offered = [int.from_bytes(groups[i:i + 2], "big") for i in range(2, len(groups), 2)]
    assert offered[:2] == [X25519, SECP256R1], offered
    assert_refused_through(fwd, s)


def test_server_without_x25519_still_tls13(openssl_server, service, start_tlsfwd, client):
    """A server that only has P-256 answers with a HelloRetryRequest."""
    srv = openssl_server("server", "-www", "-groups", "P-256")
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port)})
    hs, page = ok_through(fwd, client(fwd))
    assert hs["version"] == "TLS1.3", hs
