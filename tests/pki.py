#!/usr/bin/env python3
"""Throw-away test PKI for tlsfwd, generated at run time (no keys are committed).

Usage as a module:

    from pki import make_pki
    paths = make_pki("/tmp/somedir")   # dict name -> absolute path

Usage as a script (used by the demo):

    python3 tests/pki.py DIR

creates at least DIR/ca.pem, DIR/server.pem, DIR/server.key (CN/SAN localhost,
IP SAN 127.0.0.1) and DIR/server-chain.pem, plus the other certificates the
integration tests need. All keys are ECDSA P-256 (fast). Only the `openssl`
CLI is required, except for the expired certificate, which needs `certtool`
(gnutls-bin) because OpenSSL 3.0's `x509 -req` cannot set a past notBefore.

Files (each certificate FOO.pem comes with its key FOO.key):

    ca.pem                 trusted root CA ("tlsfwd Test Root CA")
    server.pem             leaf by ca: CN=localhost, DNS:localhost, IP:127.0.0.1
    server-chain.pem       server.pem followed by ca.pem
    inter-ca.pem           intermediate CA signed by ca
    inter-server.pem       leaf by inter-ca (CN=localhost, same SANs)
    inter-server-chain.pem inter-server.pem followed by inter-ca.pem
    wrong.pem              leaf by ca for DNS:wrong.example only
    expired.pem            leaf by ca for localhost, valid 2020-01-01..2020-12-31
    selfsigned.pem         self-signed leaf for localhost/127.0.0.1
    other-ca.pem           a second, untrusted root CA
    untrusted.pem          leaf by other-ca for localhost/127.0.0.1
    client.pem             client-auth leaf by ca (CN=tlsfwd test client)
    weird.pem              leaf by ca for localhost whose subject has a quote,
                           a backslash, a space and non-ASCII UTF-8 in O=
"""

import os
import shutil
import subprocess
import sys

_LEAF_SANS = "DNS:localhost,IP:127.0.0.1"
WEIRD_ORG = 'Odd "Org" \\ Ünïcødé'


def _run(args, cwd):
    r = subprocess.run(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("command failed (%d): %s\n%s%s" % (
            r.returncode, " ".join(args), r.stdout.decode(errors="replace"),
            r.stderr.decode(errors="replace")))
    return r


def _key(d, name):
    path = os.path.join(d, name + ".key")
    _run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
          "-out", path], d)
    os.chmod(path, 0o600)
    return path


def _write(d, name, text):
    path = os.path.join(d, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def _root_ca(d, name, cn):
    key = _key(d, name)
    cert = os.path.join(d, name + ".pem")
    _run(["openssl", "req", "-x509", "-new", "-key", key, "-out", cert, "-days", "3650",
          "-subj", "/O=tlsfwd tests/CN=" + cn, "-utf8",
          "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign",
          "-addext", "subjectKeyIdentifier=hash"], d)
    return cert, key


def _signed(d, name, subj, ca, ca_key, ext_lines, days=825):
    key = _key(d, name)
    csr = os.path.join(d, name + ".csr")
    cert = os.path.join(d, name + ".pem")
    ext = _write(d, name + ".ext", "[ext]\n" + "\n".join(ext_lines) + "\n")
    _run(["openssl", "req", "-new", "-key", key, "-out", csr, "-subj", subj, "-utf8"], d)
    _run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
          "-CAcreateserial", "-out", cert, "-days", str(days), "-sha256",
          "-extfile", ext, "-extensions", "ext"], d)
    os.unlink(csr)
    os.unlink(ext)
    return cert, key


def _server_ext(sans=_LEAF_SANS):
    return ["basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature",
            "extendedKeyUsage=serverAuth",
            "subjectAltName=" + sans,
            "authorityKeyIdentifier=keyid"]


def _expired(d, ca, ca_key):
    """Leaf for localhost signed by the trusted CA, validity entirely in the past."""
    if shutil.which("certtool") is None:
        raise RuntimeError("certtool (gnutls-bin) is needed to make the expired certificate")
    key = _key(d, "expired")
    cert = os.path.join(d, "expired.pem")
    tmpl = _write(d, "expired.tmpl", "\n".join([
        'organization = "tlsfwd tests"',
        'cn = "localhost"',
        'dns_name = "localhost"',
        'ip_address = "127.0.0.1"',
        'serial = 0x0badc0de',
        'activation_date = "2020-01-01 00:00:00"',
        'expiration_date = "2020-12-31 00:00:00"',
        'tls_www_server',
        'signing_key',
        '']))
    _run(["certtool", "--generate-certificate", "--load-privkey", key,
          "--load-ca-certificate", ca, "--load-ca-privkey", ca_key,
          "--template", tmpl, "--outfile", cert], d)
    os.unlink(tmpl)
    return cert, key


def _cat(d, name, parts):
    path = os.path.join(d, name)
    with open(path, "w") as out:
        for p in parts:
            with open(p) as f:
                out.write(f.read())
    return path


def make_pki(directory):
    """Create the whole test PKI in `directory` and return {name: path}.

    Keys: ca, ca_key, server, server_key, server_chain, inter_ca, inter_server,
    inter_server_key, inter_server_chain, wrong, wrong_key, expired, expired_key,
    selfsigned, selfsigned_key, other_ca, untrusted, untrusted_key, client,
    client_key, weird, weird_key.
    """
    d = os.path.abspath(directory)
    os.makedirs(d, exist_ok=True)
    p = {}

    p["ca"], p["ca_key"] = _root_ca(d, "ca", "tlsfwd Test Root CA")
    p["server"], p["server_key"] = _signed(d, "server", "/O=tlsfwd tests/CN=localhost",
                                           p["ca"], p["ca_key"], _server_ext())
    p["server_chain"] = _cat(d, "server-chain.pem", [p["server"], p["ca"]])

    p["inter_ca"], p["inter_ca_key"] = _signed(
        d, "inter-ca", "/O=tlsfwd tests/CN=tlsfwd Test Intermediate CA", p["ca"], p["ca_key"],
        ["basicConstraints=critical,CA:TRUE,pathlen:0",
         "keyUsage=critical,keyCertSign,cRLSign",
         "subjectKeyIdentifier=hash",
         "authorityKeyIdentifier=keyid"])
    p["inter_server"], p["inter_server_key"] = _signed(
        d, "inter-server", "/O=tlsfwd tests/CN=localhost", p["inter_ca"], p["inter_ca_key"],
        _server_ext())
    p["inter_server_chain"] = _cat(d, "inter-server-chain.pem", [p["inter_server"], p["inter_ca"]])

    p["wrong"], p["wrong_key"] = _signed(d, "wrong", "/O=tlsfwd tests/CN=wrong.example",
                                         p["ca"], p["ca_key"], _server_ext("DNS:wrong.example"))
    p["expired"], p["expired_key"] = _expired(d, p["ca"], p["ca_key"])

    p["selfsigned_key"] = _key(d, "selfsigned")
    p["selfsigned"] = os.path.join(d, "selfsigned.pem")
    _run(["openssl", "req", "-x509", "-new", "-key", p["selfsigned_key"], "-out", p["selfsigned"],
          "-days", "825", "-subj", "/O=tlsfwd tests self-signed/CN=localhost",
          "-addext", "basicConstraints=critical,CA:FALSE",
          "-addext", "keyUsage=critical,digitalSignature",
          "-addext", "extendedKeyUsage=serverAuth",
          "-addext", "subjectAltName=" + _LEAF_SANS], d)

    p["other_ca"], p["other_ca_key"] = _root_ca(d, "other-ca", "tlsfwd Untrusted Root CA")
    p["untrusted"], p["untrusted_key"] = _signed(
        d, "untrusted", "/O=tlsfwd tests/CN=localhost", p["other_ca"], p["other_ca_key"],
        _server_ext())

    p["client"], p["client_key"] = _signed(
        d, "client", "/O=tlsfwd tests/CN=tlsfwd test client", p["ca"], p["ca_key"],
        ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature",
         "extendedKeyUsage=clientAuth"])

    p["weird"], p["weird_key"] = _signed(
        d, "weird", "/O=" + WEIRD_ORG.replace("\\", "\\\\") + "/CN=localhost",
        p["ca"], p["ca_key"], _server_ext())

    for f in os.listdir(d):
        if f.endswith(".srl"):
            os.unlink(os.path.join(d, f))
    return p


def main(argv):
    if len(argv) != 2 or argv[1].startswith("-"):
        sys.stderr.write("usage: %s DIR\n" % argv[0])
        return 2
    paths = make_pki(argv[1])
    for name in sorted(paths):
        print("%-20s %s" % (name, paths[name]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
