"""What the tests learn about TLS objects: a certificate's SPKI pin and
expiry (through the openssl CLI) and the ClientHello tlsfwd sends
(extensions, ALPN offered)."""

import subprocess

from harness.wrapper import SOCK_TIMEOUT


def spki_pin(cert):
    """base64(SHA-256(DER SubjectPublicKeyInfo)) of a PEM certificate, computed with
    the openssl CLI as an operator would:
    openssl x509 -pubkey -noout | openssl pkey -pubin -outform DER | openssl dgst -sha256 -binary | base64"""
    def run(args, data):
        r = subprocess.run(args, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=30, check=True)
        return r.stdout
    pub = run(["openssl", "x509", "-in", cert, "-pubkey", "-noout"], b"")
    der = run(["openssl", "pkey", "-pubin", "-outform", "DER"], pub)
    dig = run(["openssl", "dgst", "-sha256", "-binary"], der)
    return run(["base64"], dig).decode().strip()


def cert_not_after(cert):
    """notAfter of a PEM certificate as an aware UTC datetime."""
    import datetime
    out = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-enddate"],
                         stdout=subprocess.PIPE, check=True, timeout=30).stdout.decode()
    text = out.strip().split("=", 1)[1].replace(" GMT", "")
    dt = datetime.datetime.strptime(" ".join(text.split()), "%b %d %H:%M:%S %Y")
    return dt.replace(tzinfo=datetime.timezone.utc)


def read_client_hello(conn, timeout=SOCK_TIMEOUT):
    """Read one TLS ClientHello from a raw socket; return {extension type: data}.
    Handles a ClientHello split over several records."""
    conn.settimeout(timeout)
    buf = bytearray()
    body = bytearray()

    def need(n):
        while len(buf) < n:
            d = conn.recv(65536)
            if not d:
                raise AssertionError("EOF inside the ClientHello")
            buf.extend(d)

    while True:
        need(5)
        if buf[0] != 22:
            raise AssertionError("not a handshake record: %r" % bytes(buf[:5]))
        ln = int.from_bytes(buf[3:5], "big")
        need(5 + ln)
        body += buf[5:5 + ln]
        del buf[:5 + ln]
        if len(body) >= 4 and len(body) >= 4 + int.from_bytes(body[1:4], "big"):
            break
    if body[0] != 1:
        raise AssertionError("not a ClientHello: type %d" % body[0])
    msg = bytes(body[4:4 + int.from_bytes(body[1:4], "big")])
    i = 2 + 32                                   # legacy_version, random
    i += 1 + msg[i]                              # session id
    i += 2 + int.from_bytes(msg[i:i + 2], "big")  # cipher suites
    i += 1 + msg[i]                              # compression methods
    exts = {}
    end = i + 2 + int.from_bytes(msg[i:i + 2], "big")
    i += 2
    while i < end:
        typ = int.from_bytes(msg[i:i + 2], "big")
        ln = int.from_bytes(msg[i + 2:i + 4], "big")
        exts[typ] = msg[i + 4:i + 4 + ln]
        i += 4 + ln
    return exts


EXT_STATUS_REQUEST = 5
EXT_ALPN = 16


def alpn_offered(exts):
    """The ALPN protocol names of a ClientHello (read_client_hello), in order, or None."""
    data = exts.get(EXT_ALPN)
    if data is None:
        return None
    out = []
    i = 2
    while i < len(data):
        n = data[i]
        out.append(data[i + 1:i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    return out
