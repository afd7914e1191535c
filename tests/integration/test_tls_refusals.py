"""What the default TLS policy refuses, and what it must still accept.

Servers are built here (tests/pki.py make_policy_pki, `openssl s_server`,
`gnutls-serv`, nginx), after badssl.com's catalogue: weak finite-field DHE groups
(1024-bit, composite, small subgroup), a 1024-bit RSA leaf, a leaf named only
in its subject CN; and the good ones: RSA 2048-4096, ECDSA P-256/P-384, a long
chain, 1,000 subjectAltNames in one Certificate message (~30 KB, more than one
record) over TLS 1.2 and 1.3, also from a server that writes its whole flight
at once (gnutls-serv), which once stalled tlsfwd until handshake_timeout."""

import os
import socket
import subprocess
import threading
import time

import pytest

import pki as pki_mod
from harness.clients import recv_all, recv_closed, recv_exact, send_quiet
from harness.upstreams import closed_port, OpenSSLServer

# The test is for a stall, not speed: a stalled handshake ends in this timeout.
HS_TIMEOUT = {"handshake_timeout": "4s"}
# OpenSSL 3 refuses to serve a 1024-bit key or group at its default level 2.
SECLEVEL0 = "@SECLEVEL=0"
DHE_ONLY = "DHE-RSA-AES128-GCM-SHA256:" + SECLEVEL0
# An administrator turning finite-field DHE back on for TLS 1.2, keeping the rest.
WITH_DHE = "NORMAL:-VERS-ALL:+VERS-TLS1.2:+DHE-RSA:-RSA:%PROFILE_MEDIUM"


@pytest.fixture(scope="module")
def ppki(pki, tmp_path_factory):
    return pki_mod.make_policy_pki(str(tmp_path_factory.mktemp("policy-pki")), pki)


@pytest.fixture
def s_server(cleanup):
    def make(cert, key, *args, chain=None):
        srv = OpenSSLServer(cert, key, *args, chain=chain)
        cleanup.append(srv)
        return srv
    return make


class GnutlsServ:
    """`gnutls-serv --echo`: sends each handshake flight in one write."""

    def __init__(self, cert, key, priority="NORMAL"):
        for _ in range(20):
            self.port = closed_port()
            self.proc = subprocess.Popen(
                ["gnutls-serv", "--echo", "-p", str(self.port), "--x509certfile", cert,
                 "--x509keyfile", key, "--priority", priority],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            lines = []
            # "Echo Server listening on IPv4 0.0.0.0 port N...done": it accepts
            for raw in iter(self.proc.stdout.readline, b""):
                lines.append(raw.decode(errors="replace").rstrip())
                if "IPv4" in lines[-1] and lines[-1].endswith("done"):
                    threading.Thread(target=self._drain, daemon=True).start()
                    return
                if "IPv4" in lines[-1]:
                    break          # the port was taken meanwhile: another
            self.close()
        raise AssertionError("gnutls-serv did not start:\n" + "\n".join(lines))

    def _drain(self):
        for _ in iter(self.proc.stdout.readline, b""):
            pass

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.proc.stdout.close()


NGINX_CONF = """user root;
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        listen [::1]:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols {protocols};
        location / {{ return 200 "ok from nginx\\n"; }}
    }}
}}
"""


class Nginx:
    """nginx (Debian's package) serving HTTPS with the given certificate chain."""

    def __init__(self, directory, cert, key, protocols):
        for _ in range(20):
            self.port = closed_port()
            conf = os.path.join(directory, "nginx.conf")
            with open(conf, "w") as f:
                f.write(NGINX_CONF.format(dir=directory, port=self.port, cert=cert, key=key,
                                          protocols=protocols))
            self.proc = subprocess.Popen(["nginx", "-c", conf, "-p", directory],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE)
            # nginx says nothing when it listens: its port accepting is the sign
            deadline = time.monotonic() + 10
            while self.proc.poll() is None and time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return
                except OSError:
                    time.sleep(0.02)
            err = self.close()
            if b"Address already in use" not in err:
                raise AssertionError("nginx did not start: %s" % err.decode(errors="replace"))
        raise AssertionError("nginx found no free port")

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        err = self.proc.stderr.read()
        self.proc.stderr.close()
        return err


@pytest.fixture
def gnutls_serv(cleanup):
    def make(*args, **kw):
        srv = GnutlsServ(*args, **kw)
        cleanup.append(srv)
        return srv
    return make


def www_get(fwd, client):
    """GET / from an `s_server -www` through tlsfwd; then the client closes its
    side, as HTTP/1.0 clients do (s_server serves one connection at a time)."""
    s = client(fwd)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    page = recv_all(s)
    s.shutdown(socket.SHUT_WR)
    return fwd.conn_of(s), page


def refused(fwd, client):
    s = client(fwd)
    send_quiet(s, b"GET / HTTP/1.0\r\n\r\n")
    data, _ = recv_closed(s)
    assert data == b""
    hs = fwd.conn_of(s)
    assert hs["result"] in ("fail", "alert") and hs["level"] == "warn", hs
    assert fwd.wait_close(hs["conn"])["reason"] == "handshake_failed"
    return hs


# ----- certificates -----

@pytest.mark.parametrize("cert,words", [
    ("rsa1024", ("insecure", "RSA under 2048 bits")),
    ("nosan", ("only in its subject CN", "allow_cn_only")),
])
def test_weak_or_cn_only_certificate_refused(cert, words, ppki, s_server, service,
                                            start_tlsfwd, client):
    srv = s_server(ppki[cert], ppki[cert + "_key"], "-www", "-cipher", "DEFAULT:" + SECLEVEL0)
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port)})
    hs = refused(fwd, client)
    assert (hs["result"], hs["stage"], hs["verify"]) == ("fail", "verify", "fail"), hs
    for w in words:
        assert w in hs["error"], hs["error"]
    assert hs["alert_sent"] not in ("", "-"), hs


def test_cn_only_accepted_with_allow_cn_only_and_said_loudly(ppki, s_server, service,
                                                             start_tlsfwd, client, check_ini):
    srv = s_server(ppki["nosan"], ppki["nosan_key"], "-www")
    svc = service("localhost:%d" % srv.port, allow_cn_only="yes")
    fwd = start_tlsfwd({"svc": svc})
    warn = fwd.find("config", service="svc")
    assert warn and warn[0]["level"] == "warn" and "allow_cn_only" in warn[0]["msg"], warn
    hs, page = www_get(fwd, client)
    assert (hs["result"], hs["verify"]) == ("ok", "ok"), hs
    assert page.startswith(b"HTTP/1.0 200 ok"), page[:100]
    rc, errors, text, _path = check_ini({"svc": svc})
    assert rc == 0 and [m.split(":")[0] for _f, _l, m in errors] == ["warning"], errors
    assert "allow_cn_only" in errors[0][2], errors


@pytest.mark.parametrize("cert,version", [
    ("rsa2048", "-tls1_2"), ("rsa2048", "-tls1_3"), ("rsa3072", "-tls1_3"),
    ("rsa4096", "-tls1_2"), ("p384", "-tls1_3"), ("p384", "-tls1_2"), ("long", "-tls1_3"),
])
def test_good_certificates_connect(cert, version, ppki, s_server, service, start_tlsfwd,
                                   client):
    srv = s_server(ppki[cert], ppki[cert + "_key"], "-www", version,
                   chain=ppki.get(cert + "_chain"))
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port)})
    hs, page = www_get(fwd, client)
    assert (hs["result"], hs["verify"]) == ("ok", "ok"), hs
    assert hs["version"] == {"-tls1_2": "TLS1.2", "-tls1_3": "TLS1.3"}[version], hs
    assert page.startswith(b"HTTP/1.0 200 ok"), page[:100]


# ----- finite-field Diffie-Hellman -----

@pytest.mark.parametrize("group", ["dh1024", "dh_small", "dh_composite", "ffdhe2048"])
def test_dhe_only_server_refused_by_default(group, ppki, s_server, service, start_tlsfwd,
                                            client):
    """The default offers no finite-field DHE in TLS 1.2: a server with nothing
    else refuses the handshake, whatever its group."""
    srv = s_server(ppki["rsa2048"], ppki["rsa2048_key"], "-www", "-tls1_2",
                   "-cipher", DHE_ONLY, "-dhparam", ppki[group])
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port)})
    hs = refused(fwd, client)
    assert (hs["result"], hs["stage"], hs.get("alert_from")) == ("alert", "handshake",
                                                                  "upstream"), hs
    assert hs["alert"] == "handshake_failure", hs


@pytest.mark.parametrize("group,expect", [
    ("dh1024", "GNUTLS_E_DH_PRIME_UNACCEPTABLE"),
    ("dh_small", "RFC 7919"),
    ("dh_composite", "RFC 7919"),
])
def test_weak_dhe_group_refused_even_when_dhe_is_enabled(group, expect, ppki, s_server,
                                                         service, start_tlsfwd, client):
    srv = s_server(ppki["rsa2048"], ppki["rsa2048_key"], "-www", "-tls1_2",
                   "-cipher", DHE_ONLY, "-dhparam", ppki[group])
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port, tls_priority=WITH_DHE)})
    hs = refused(fwd, client)
    assert hs["stage"] == "handshake", hs
    assert expect in hs.get("error", "") + " " + hs.get("gnutls_error", ""), hs
    if expect == "RFC 7919":    # ours: after GnuTLS said yes
        assert (hs["result"], hs["alert_sent"]) == ("fail", "insufficient_security"), hs
    else:                       # GnuTLS's: below %PROFILE_MEDIUM's 2048 bits
        assert (hs["result"], hs["alert_from"], hs["alert"]) == (
            "alert", "tlsfwd", "insufficient_security"), hs


def test_rfc7919_group_accepted_when_dhe_is_enabled(ppki, s_server, service, start_tlsfwd,
                                                    client):
    srv = s_server(ppki["rsa2048"], ppki["rsa2048_key"], "-www", "-tls1_2",
                   "-cipher", DHE_ONLY, "-dhparam", ppki["ffdhe2048"])
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port, tls_priority=WITH_DHE)})
    warn = fwd.find("config", service="svc")
    assert warn and "DHE-RSA" in warn[0]["msg"], warn
    hs, page = www_get(fwd, client)
    assert (hs["result"], hs["version"]) == ("ok", "TLS1.2"), hs
    assert b"DHE-RSA-AES128-GCM-SHA256" in page, page[:600]


# ----- large certificate messages -----

BIG = [("big_rsa", None), ("big_ec", None), ("big_inter", "big_inter_chain")]
ROUNDS = 10


@pytest.mark.parametrize("version", ["TLS1.2", "TLS1.3"])
@pytest.mark.parametrize("cert,chain", BIG, ids=[c for c, _ in BIG])
def test_large_certificate_flight_in_one_write(cert, chain, version, ppki, gnutls_serv,
                                               service, start_tlsfwd, client):
    """gnutls-serv writes its whole flight at once: tlsfwd's read-ahead takes
    it all, and GnuTLS returns AGAIN after each record of the Certificate
    message. The rest is in tlsfwd's buffer, not the socket: it must go on."""
    srv = gnutls_serv(ppki[chain] if chain else ppki[cert], ppki[cert + "_key"],
                      priority="NORMAL:-VERS-ALL:+VERS-" + version.replace("TLS", "TLS"))
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port, **HS_TIMEOUT)})
    for i in range(ROUNDS):
        s = client(fwd)
        msg = b"round %d\n" % i
        s.sendall(msg)
        assert recv_exact(s, len(msg)) == msg
        hs = fwd.conn_of(s)
        assert (hs["result"], hs["version"]) == ("ok", version), hs
        s.close()


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
@pytest.mark.parametrize("cert,chain", BIG, ids=[c for c, _ in BIG])
def test_large_certificate_flight_from_openssl(cert, chain, version, ppki, s_server,
                                               service, start_tlsfwd, client):
    srv = s_server(ppki[cert], ppki[cert + "_key"], "-www", version,
                   chain=ppki[chain] if chain else None)
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port, **HS_TIMEOUT)})
    for _ in range(ROUNDS):
        hs, page = www_get(fwd, client)
        assert hs["result"] == "ok", hs
        assert page.startswith(b"HTTP/1.0 200 ok"), page[:100]


@pytest.mark.parametrize("version", ["TLS1.2", "TLS1.3"])
@pytest.mark.parametrize("cert,chain", BIG, ids=[c for c, _ in BIG])
def test_large_certificate_flight_from_nginx(cert, chain, version, ppki, service, start_tlsfwd,
                                             client, cleanup, tmp_path):
    srv = Nginx(str(tmp_path), ppki[chain] if chain else ppki[cert], ppki[cert + "_key"],
                "TLSv" + version[3:])
    cleanup.append(srv)
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port, **HS_TIMEOUT)})
    for _ in range(ROUNDS):
        s = client(fwd)
        s.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        page = recv_all(s)
        assert page.startswith(b"HTTP/1.1 200 OK") and page.endswith(b"ok from nginx\n"), page
        hs = fwd.conn_of(s)
        assert (hs["result"], hs["version"]) == ("ok", version), hs
        s.close()
