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

TLS-feature extras (client certificates, OCSP, CRL, expiry):

    client-enc.key         client.key encrypted (PKCS#8, AES-256) with the
                           password in client-enc.pass (first line)
    inter-client.pem       client-auth leaf by inter-ca (CN=tlsfwd intermediate
                           client); inter-client-chain.pem adds inter-ca.pem
    client-soon.pem        client-auth leaf by ca (CN=tlsfwd expiring client)
                           valid for 5 days from now
    muststaple.pem         leaf by ca for localhost with the TLS feature
                           extension status_request ("must-staple")
    ocsp.pem               OCSP responder by ca (extendedKeyUsage OCSPSigning)
    revoked.pem            leaf by ca for localhost, listed in ca.crl
    ca.crl                 PEM CRL by ca listing revoked.pem
    ocsp-good.der          OCSP response (by ocsp.pem): server.pem good
    ocsp-revoked.der       OCSP response (by ocsp.pem): server.pem revoked
    ocsp-muststaple-good.der  OCSP response (by ocsp.pem): muststaple.pem good
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


def _key(d, name, alg="EC:P-256"):
    """A new private key d/NAME.key: alg is EC:CURVE or RSA:BITS."""
    kind, param = alg.split(":")
    opts = (["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:" + param] if kind == "EC"
            else ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:" + param])
    path = os.path.join(d, name + ".key")
    _run(["openssl", "genpkey"] + opts + ["-out", path], d)
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


def _signed(d, name, subj, ca, ca_key, ext_lines, days=825, alg="EC:P-256"):
    key = _key(d, name, alg)
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


def _serial(cert, d):
    out = _run(["openssl", "x509", "-in", cert, "-noout", "-serial"], d).stdout.decode()
    return out.strip().split("=", 1)[1].upper()


def _subject(cert, d):
    out = _run(["openssl", "x509", "-in", cert, "-noout", "-subject", "-nameopt", "compat"],
               d).stdout.decode()
    return out.strip().split("=", 1)[1].strip()


def _ocsp_response(d, name, ca, responder, responder_key, cert, status):
    """A DER OCSP response for `cert`, signed by `responder`, built from an
    `openssl ca`-style index.txt in which cert is 'V' (valid) or 'R' (revoked)."""
    index = os.path.join(d, name + ".index.txt")
    if status == "V":
        fields = ["V", "301231000000Z", "", _serial(cert, d), "unknown", _subject(cert, d)]
    else:
        fields = ["R", "301231000000Z", "240101000000Z,keyCompromise", _serial(cert, d),
                  "unknown", _subject(cert, d)]
    _write(d, name + ".index.txt", "\t".join(fields) + "\n")
    out = os.path.join(d, name + ".der")
    _run(["openssl", "ocsp", "-index", index, "-rsigner", responder, "-rkey", responder_key,
          "-CA", ca, "-issuer", ca, "-cert", cert, "-no_nonce", "-respout", out,
          "-ndays", "1"], d)
    os.unlink(index)
    for extra in (index + ".attr",):
        if os.path.exists(extra):
            os.unlink(extra)
    return out


def _crl(d, ca, ca_key, revoked_certs):
    """A PEM CRL by ca listing revoked_certs (certtool)."""
    if shutil.which("certtool") is None:
        raise RuntimeError("certtool (gnutls-bin) is needed to make the CRL")
    listed = _cat(d, "crl-revoked-list.pem", revoked_certs)
    tmpl = _write(d, "crl.tmpl", "crl_next_update = 30\ncrl_number = 1\n")
    out = os.path.join(d, "ca.crl")
    _run(["certtool", "--generate-crl", "--load-ca-privkey", ca_key,
          "--load-ca-certificate", ca, "--load-certificate", listed,
          "--template", tmpl, "--outfile", out], d)
    os.unlink(tmpl)
    os.unlink(listed)
    return out


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
    client_key, weird, weird_key; and for the TLS features: client_enc_key,
    client_enc_pass, inter_client, inter_client_key, inter_client_chain,
    client_soon, client_soon_key, muststaple, muststaple_key,
    ocsp, ocsp_key, revoked, revoked_key, crl, ocsp_good, ocsp_revoked,
    ocsp_muststaple_good.
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

    _tls_extras(d, p)

    for f in os.listdir(d):
        if f.endswith(".srl"):
            os.unlink(os.path.join(d, f))
    return p


def make_policy_pki(directory, p):
    """The servers of the TLS policy tests (tests/integration/test_tls_refusals.py),
    made on top of make_pki()'s p in directory; returns {name: path}. Each
    certificate NAME comes with NAME_key; chains are NAME_chain.

        rsa1024 rsa2048 rsa3072 rsa4096 p384   leaves by ca for localhost
        nosan          leaf by ca, CN=localhost and no subjectAltName
        big_rsa big_ec leaves by ca with 1,000 DNS subjectAltNames (~30 KB)
        big_inter      the same by inter-ca (big_inter_chain adds inter-ca)
        long           leaf under ca > i1 > i2 > i3 (long_chain: leaf, i3, i2, i1)
        dh1024         DH parameters: RFC 5114's 1024-bit group
        dh_small       RFC 5114's 2048-bit group with a 224-bit subgroup: p-1 has
                       small factors (no safe prime)
        dh_composite   2048-bit "group" whose modulus is not prime
        ffdhe2048      RFC 7919's ffdhe2048
    """
    d = os.path.abspath(directory)
    os.makedirs(d, exist_ok=True)
    out = {}
    leaf = "/O=tlsfwd tests/CN=localhost"
    for name, alg in [("rsa1024", "RSA:1024"), ("rsa2048", "RSA:2048"), ("rsa3072", "RSA:3072"),
                      ("rsa4096", "RSA:4096"), ("p384", "EC:P-384")]:
        out[name], out[name + "_key"] = _signed(d, name, leaf, p["ca"], p["ca_key"],
                                                _server_ext(), alg=alg)
    out["nosan"], out["nosan_key"] = _signed(
        d, "nosan", leaf, p["ca"], p["ca_key"],
        [e for e in _server_ext() if not e.startswith("subjectAltName")])
    many = _LEAF_SANS + "".join(",DNS:host%04d.sans.example" % i for i in range(1000))
    out["big_rsa"], out["big_rsa_key"] = _signed(d, "big-rsa", leaf, p["ca"], p["ca_key"],
                                                 _server_ext(many), alg="RSA:2048")
    out["big_ec"], out["big_ec_key"] = _signed(d, "big-ec", leaf, p["ca"], p["ca_key"],
                                               _server_ext(many))
    out["big_inter"], out["big_inter_key"] = _signed(d, "big-inter", leaf, p["inter_ca"],
                                                     p["inter_ca_key"], _server_ext(many))
    out["big_inter_chain"] = _cat(d, "big-inter-chain.pem", [out["big_inter"], p["inter_ca"]])
    ca, ca_key, chain = p["ca"], p["ca_key"], []
    for i in (1, 2, 3):
        ca, ca_key = _signed(d, "long-i%d" % i, "/O=tlsfwd tests/CN=tlsfwd long chain %d" % i,
                             ca, ca_key, ["basicConstraints=critical,CA:TRUE",
                                          "keyUsage=critical,keyCertSign,cRLSign",
                                          "subjectKeyIdentifier=hash",
                                          "authorityKeyIdentifier=keyid"])
        chain.insert(0, ca)
    out["long"], out["long_key"] = _signed(d, "long", leaf, ca, ca_key, _server_ext())
    out["long_chain"] = _cat(d, "long-chain.pem", [out["long"]] + chain)
    for name, opt in [("dh1024", "dh_rfc5114:1"), ("dh_small", "dh_rfc5114:2"),
                      ("ffdhe2048", "group:ffdhe2048")]:
        out[name] = os.path.join(d, name + ".pem")
        _run(["openssl", "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", opt,
              "-out", out[name]], d)
    # a 2048-bit odd modulus divisible by 3: no prime, no group
    composite = int.from_bytes(os.urandom(256), "big") | (1 << 2047) | 1
    while composite % 3 != 0:
        composite += 2
    out["dh_composite"] = _write(d, "dh-composite.pem", _pem(
        "DH PARAMETERS", _der_seq(_der_int(composite), _der_int(2))))
    for f in os.listdir(d):
        if f.endswith(".srl"):
            os.unlink(os.path.join(d, f))
    return out


def _pem(label, der):
    import base64
    b64 = base64.encodebytes(der).decode().replace("\n", "")
    return "-----BEGIN %s-----\n%s\n-----END %s-----\n" % (
        label, "\n".join(b64[i:i + 64] for i in range(0, len(b64), 64)), label)


CLIENT_KEY_PASSWORD = "correct horse battery"


def _tls_extras(d, p):
    """Client-key, OCSP, CRL and expiry material for the TLS feature tests."""
    client_ext = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature",
                  "extendedKeyUsage=clientAuth"]
    p["client_enc_key"] = os.path.join(d, "client-enc.key")
    _run(["openssl", "pkcs8", "-topk8", "-in", p["client_key"], "-out", p["client_enc_key"],
          "-v2", "aes-256-cbc", "-passout", "pass:" + CLIENT_KEY_PASSWORD], d)
    os.chmod(p["client_enc_key"], 0o600)
    p["client_enc_pass"] = _write(d, "client-enc.pass", CLIENT_KEY_PASSWORD + "\n")
    os.chmod(p["client_enc_pass"], 0o600)

    p["inter_client"], p["inter_client_key"] = _signed(
        d, "inter-client", "/O=tlsfwd tests/CN=tlsfwd intermediate client", p["inter_ca"],
        p["inter_ca_key"], client_ext)
    p["inter_client_chain"] = _cat(d, "inter-client-chain.pem", [p["inter_client"], p["inter_ca"]])

    p["client_soon"], p["client_soon_key"] = _signed(
        d, "client-soon", "/O=tlsfwd tests/CN=tlsfwd expiring client", p["ca"], p["ca_key"],
        client_ext, days=5)

    p["muststaple"], p["muststaple_key"] = _signed(
        d, "muststaple", "/O=tlsfwd tests must-staple/CN=localhost", p["ca"], p["ca_key"],
        _server_ext() + ["1.3.6.1.5.5.7.1.24=DER:30:03:02:01:05"])
    p["ocsp"], p["ocsp_key"] = _signed(
        d, "ocsp", "/O=tlsfwd tests/CN=tlsfwd Test OCSP Responder", p["ca"], p["ca_key"],
        ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature",
         "extendedKeyUsage=critical,OCSPSigning", "authorityKeyIdentifier=keyid"])
    p["revoked"], p["revoked_key"] = _signed(
        d, "revoked", "/O=tlsfwd tests revoked/CN=localhost", p["ca"], p["ca_key"],
        _server_ext())
    p["crl"] = _crl(d, p["ca"], p["ca_key"], [p["revoked"]])

    p["ocsp_good"] = _ocsp_response(d, "ocsp-good", p["ca"], p["ocsp"], p["ocsp_key"],
                                    p["server"], "V")
    p["ocsp_revoked"] = _ocsp_response(d, "ocsp-revoked", p["ca"], p["ocsp"], p["ocsp_key"],
                                       p["server"], "R")
    p["ocsp_muststaple_good"] = _ocsp_response(d, "ocsp-muststaple-good", p["ca"], p["ocsp"],
                                               p["ocsp_key"], p["muststaple"], "V")



# ---------------------------------------------------------------------------
# Hand-made DER certificates: names that no CLI writes (control bytes, a NUL,
# bytes that are not UTF-8 inside a UTF8String, T61String). The TBSCertificate
# is encoded here and signed (ECDSA with SHA-256) by `openssl dgst -sign`.
# ---------------------------------------------------------------------------

OID_CN = "2.5.4.3"
OID_O = "2.5.4.10"
OID_OU = "2.5.4.11"
TAG_UTF8 = 0x0c
TAG_PRINTABLE = 0x13
TAG_T61 = 0x14
TAG_IA5 = 0x16


def _der(tag, body):
    n = len(body)
    if n < 0x80:
        head = bytes([n])
    else:
        octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
        head = bytes([0x80 | len(octets)]) + octets
    return bytes([tag]) + head + body


def _der_seq(*parts):
    return _der(0x30, b"".join(parts))


def _der_int(n):
    return _der(0x02, n.to_bytes(n.bit_length() // 8 + 1, "big"))


def _der_oid(dotted):
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray([40 * arcs[0] + arcs[1]])
    for a in arcs[2:]:
        chunk = [a & 0x7f]
        a >>= 7
        while a:
            chunk.append(0x80 | (a & 0x7f))
            a >>= 7
        out += bytes(reversed(chunk))
    return _der(0x06, bytes(out))


def der_name(rdns):
    """A DER Name from [(oid, string tag, value bytes)], one attribute per RDN,
    in order. The value bytes are written as they are, unchecked."""
    return _der_seq(*[_der(0x31, _der_seq(_der_oid(oid), _der(tag, value)))
                      for oid, tag, value in rdns])


def _der_ext(oid, critical, value):
    return _der_seq(_der_oid(oid), *([_der(0x01, b"\xff")] if critical else []),
                    _der(0x04, value))


def _utctime(t):
    import time as _time
    return _der(0x17, _time.strftime("%y%m%d%H%M%SZ", _time.gmtime(t)).encode())


def der_certificate(d, name, subject, issuer, signer_key=None, ca=False, client=False,
                    dns=("localhost",), ips=("127.0.0.1",), days=825):
    """Certificate d/NAME.pem with a new P-256 key d/NAME.key; subject and issuer
    are lists for der_name(). signer_key: the issuer's key (None: self-signed).
    A CA gets basicConstraints CA:TRUE and keyCertSign; a server leaf gets
    serverAuth and a subjectAltName of `dns` and `ips`; a client leaf
    (client=True) clientAuth and no subjectAltName. Returns (cert, key)."""
    import base64
    import ipaddress
    import time as _time
    key = _key(d, name)
    spki = _run(["openssl", "pkey", "-in", key, "-pubout", "-outform", "DER"], d).stdout
    ecdsa_sha256 = _der_seq(_der_oid("1.2.840.10045.4.3.2"))
    if ca:
        exts = [_der_ext("2.5.29.19", True, _der_seq(_der(0x01, b"\xff"))),
                _der_ext("2.5.29.15", True, _der(0x03, b"\x01\x06"))]   # keyCertSign, cRLSign
    else:
        exts = [_der_ext("2.5.29.19", True, _der_seq()),
                _der_ext("2.5.29.15", True, _der(0x03, b"\x07\x80")),  # digitalSignature
                _der_ext("2.5.29.37", False, _der_seq(_der_oid(
                    "1.3.6.1.5.5.7.3.2" if client else "1.3.6.1.5.5.7.3.1")))]
        if not client:
            alt = [_der(0x82, h.encode()) for h in dns] + \
                  [_der(0x87, ipaddress.ip_address(a).packed) for a in ips]
            exts.append(_der_ext("2.5.29.17", False, _der_seq(*alt)))
    now = int(_time.time())
    serial = int.from_bytes(os.urandom(8), "big") >> 1
    tbs = _der_seq(_der(0xa0, _der_int(2)), _der_int(serial), ecdsa_sha256,
                   der_name(issuer), _der_seq(_utctime(now - 3600), _utctime(now + days * 86400)),
                   der_name(subject), spki, _der(0xa3, _der_seq(*exts)))
    tbs_path = os.path.join(d, name + ".tbs")
    with open(tbs_path, "wb") as f:
        f.write(tbs)
    sig = _run(["openssl", "dgst", "-sha256", "-sign", signer_key or key, tbs_path], d).stdout
    os.unlink(tbs_path)
    der = _der_seq(tbs, ecdsa_sha256, _der(0x03, b"\x00" + sig))
    b64 = base64.encodebytes(der).decode().replace("\n", "")
    pem = "-----BEGIN CERTIFICATE-----\n" + "\n".join(
        b64[i:i + 64] for i in range(0, len(b64), 64)) + "\n-----END CERTIFICATE-----\n"
    return _write(d, name + ".pem", pem), key


def gnutls_dns(cert):
    """(subject, issuer) of a PEM certificate as GnuTLS renders them (RFC 4514,
    as bytes), read from `certtool -i`: the strings a GnuTLS program gets."""
    out = _run(["certtool", "-i", "--infile", cert], os.path.dirname(cert)).stdout

    def between(start, end):
        i = out.index(start) + len(start)
        return out[i:out.index(end, i)]
    return (between(b"\tSubject: ", b"\n\tSubject Public Key Algorithm:"),
            between(b"\tIssuer: ", b"\n\tValidity:"))


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
