"""Client certificate and key from a PKCS#11 token (SoftHSM), by `pkcs11:` URI.

A token is made at test time in a private SoftHSM store (SOFTHSM2_CONF), the
client key and certificate are written to it with p11tool, and tlsfwd, given
only URIs, must authenticate to an `openssl s_server` that requires a client
certificate. GnuTLS finds the SoftHSM module through p11-kit.
"""

import os
import shutil
import socket
import subprocess

import pytest

from harness.clients import recv_all

PIN = "1234"
REQUEST = b"GET / HTTP/1.0\r\n\r\n"
CERT_URI = "pkcs11:token=tlsfwd;object=client;type=cert"
KEY_URI = "pkcs11:token=tlsfwd;object=client;type=private?pin-value=" + PIN


def _need(tool, package):
    if shutil.which(tool) is None:
        pytest.fail("%s is missing: install the Debian package %s (make deps)"
                    % (tool, package))


@pytest.fixture
def token(pki, tmp_path):
    """A SoftHSM token 'tlsfwd' holding the client key and certificate;
    returns the environment that points SoftHSM at it."""
    _need("softhsm2-util", "softhsm2")
    _need("p11tool", "gnutls-bin")
    store = tmp_path / "tokens"
    store.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text("directories.tokendir = %s\nobjectstore.backend = file\n"
                    "log.level = ERROR\n" % store)
    env = dict(os.environ, SOFTHSM2_CONF=str(conf), GNUTLS_PIN=PIN)

    def run(*args):
        r = subprocess.run(args, env=env, capture_output=True, timeout=30)
        assert r.returncode == 0, (args, r.stdout, r.stderr)

    run("softhsm2-util", "--init-token", "--free", "--label", "tlsfwd",
        "--pin", PIN, "--so-pin", "5678")
    key_p8 = tmp_path / "client.p8"
    run("openssl", "pkcs8", "-topk8", "-nocrypt", "-in", pki["client_key"],
        "-out", str(key_p8))
    run("p11tool", "--login", "--write", "--label", "client", "--load-privkey",
        str(key_p8), "pkcs11:token=tlsfwd")
    run("p11tool", "--login", "--write", "--label", "client",
        "--load-certificate", pki["client"], "pkcs11:token=tlsfwd")
    key_p8.unlink()
    return {"SOFTHSM2_CONF": str(conf)}


def fetch(s):
    s.sendall(REQUEST)
    page = recv_all(s)
    s.shutdown(socket.SHUT_WR)
    return page


def test_pkcs11_uris_pass_the_check(token, tlsfwd_bin, tmp_path, pki):
    cfg = tmp_path / "p11.ini"
    cfg.write_text("[p11]\nlisten = 127.0.0.1:0\nupstream = localhost:443\n"
                   "ca_file = %s\ncert_file = %s\nkey_file = %s\n"
                   % (pki["ca"], CERT_URI, KEY_URI))
    r = subprocess.run([tlsfwd_bin, "-t", "-c", str(cfg)], capture_output=True,
                       env=dict(os.environ, **token), timeout=30)
    assert r.returncode == 0, r.stderr.decode()


def test_pkcs11_client_certificate_accepted(token, openssl_server, pki, service,
                                            start_tlsfwd, client):
    srv = openssl_server("server", "-Verify", "1", "-CAfile", pki["ca"], "-www")
    fwd = start_tlsfwd({"p11": service("localhost:%d" % srv.port, cert_file=CERT_URI,
                                       key_file=KEY_URI)}, env=token)
    s = client(fwd, "p11")
    page = fetch(s)
    assert b"Client certificate" in page, page[:400]
    hs = fwd.conn_of(s)
    assert hs["result"] == "ok", hs
    assert "CN=tlsfwd test client" in hs["client_cert"], hs


def test_pkcs11_wrong_object_is_a_config_error(token, tlsfwd_bin, tmp_path, pki):
    cfg = tmp_path / "p11.ini"
    cfg.write_text("[p11]\nlisten = 127.0.0.1:0\nupstream = localhost:443\n"
                   "ca_file = %s\ncert_file = %s\nkey_file = %s\n"
                   % (pki["ca"], CERT_URI.replace("object=client", "object=nosuch"),
                      KEY_URI.replace("object=client", "object=nosuch")))
    r = subprocess.run([tlsfwd_bin, "-t", "-c", str(cfg)], capture_output=True,
                       env=dict(os.environ, **token), timeout=30)
    assert r.returncode == 1, r.stderr.decode()
    err = r.stderr.decode()
    assert "%s:6: " % cfg in err and "key_file" in err, err
