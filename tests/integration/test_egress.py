"""Egress as enterprises have it, with the real programs: squid as the HTTP
CONNECT proxy (open, with Basic authentication, refusing by ACL) through
which tlsfwd reaches an `openssl s_server` upstream by name (the proxy
resolves it); a proxy that never answers; failover past a refusing one;
and haproxy (`accept-proxy`) and nginx (`listen ... ssl proxy_protocol`)
as upstreams that log the client address tlsfwd's PROXY header gave them,
v1 and v2."""

import os
import re
import shutil
import subprocess
import tempfile
import time

import pytest

from harness.clients import connect, recv_all, www_fetch
from harness.servers import start_server
from harness.upstreams import SilentHolder


def _squid(d, pki, users=None, deny_port=None):
    auth = ""
    if users:
        with open(os.path.join(d, "passwd"), "w") as f:
            for user, password in users.items():
                h = subprocess.run(["openssl", "passwd", "-apr1", password],
                                   stdout=subprocess.PIPE, check=True).stdout.decode().strip()
                f.write("%s:%s\n" % (user, h))
        os.chmod(os.path.join(d, "passwd"), 0o644)
        auth = ("auth_param basic program /usr/lib/squid/basic_ncsa_auth %s/passwd\n"
                "acl authed proxy_auth REQUIRED\nhttp_access deny !authed\n" % d)
    deny = ""
    if deny_port is not None:
        deny = "acl blocked port %d\nhttp_access deny CONNECT blocked\n" % deny_port

    def argv(port):
        with open(os.path.join(d, "squid.conf"), "w") as f:
            f.write("http_port 127.0.0.1:%d\n" % port +
                    "pid_filename %s/squid.pid\ncache_log %s/cache.log\n" % (d, d) +
                    "access_log stdio:%s/access.log\ncache deny all\n" % d +
                    "coredump_dir %s\nshutdown_lifetime 0 seconds\n" % d +
                    "dns_nameservers 127.0.0.1\nhosts_file /etc/hosts\n" +
                    auth + deny +
                    "acl CONNECT method CONNECT\nhttp_access allow CONNECT localhost\n"
                    "http_access deny all\n")
        return ["squid", "-N", "-f", os.path.join(d, "squid.conf")]
    return start_server("squid", d, pki, argv, ready="tcp")


class _Dir:
    """A directory squid's user (proxy, when the tests run as root) can
    reach: pytest's own are private to the user running them."""

    def __init__(self):
        self.path = tempfile.mkdtemp(prefix="tlsfwd-squid-")
        os.chmod(self.path, 0o777)

    def close(self):
        shutil.rmtree(self.path, ignore_errors=True)


@pytest.fixture
def squid(pki, cleanup):
    if shutil.which("squid") is None:
        pytest.fail("squid is not installed: run `make deps`")

    def make(**kw):
        d = _Dir()
        cleanup.append(d)
        srv = _squid(d.path, pki, **kw)
        cleanup.append(srv)
        return srv
    return make


def _through(start_tlsfwd, service, upstreams, proxy, **over):
    return start_tlsfwd({"svc": service(upstreams, via="http://%s127.0.0.1:%d" % (
        over.pop("user", ""), proxy), verify_hostname=None, **over)})


def test_through_squid_by_name(openssl_server, squid, service, start_tlsfwd):
    """The upstream is named (localhost): the proxy resolves it, tlsfwd
    verifies the real upstream's certificate through the tunnel."""
    up = openssl_server("server", "-www")
    sq = squid()
    fwd = _through(start_tlsfwd, service, "localhost:%d" % up.port, sq.port)
    hs, body = _fetch(fwd)
    assert hs["result"] == "ok" and hs["verify"] == "ok", hs
    assert hs["upstream"] == "127.0.0.1:%d" % sq.port, hs      # the path: the proxy
    assert b"s_server" in body or b"HTTP/1.0 200" in body, body[:200]
    _wait_in_file(os.path.join(sq.dir, "access.log"), "CONNECT localhost:%d" % up.port)


def _wait_in_file(path, text, timeout=5):
    """Servers write their log line when the connection ends: wait for it."""
    deadline = time.monotonic() + timeout
    while True:
        with open(path) as f:
            if text in f.read():
                return
        assert time.monotonic() < deadline, "no %r in %s" % (text, path)
        time.sleep(0.05)


def _fetch(fwd):
    """A GET through the service: (its handshake line, what came back)."""
    s = connect(fwd.ports["svc"])
    fwd.client_service[(s.getsockname()[:2], s.getpeername()[:2])] = "svc"
    try:
        body = www_fetch(s)
    except ConnectionResetError:    # a failed set-up: closed with the request unread
        body = b""
    hs = fwd.conn_of(s)
    s.close()
    return hs, body


def test_basic_authentication(openssl_server, squid, service, start_tlsfwd, tmp_path):
    up = openssl_server("server", "-www")
    sq = squid(users={"app": "s3cret pass"})
    good = tmp_path / "good.pass"
    good.write_text("s3cret pass\n")
    bad = tmp_path / "bad.pass"
    bad.write_text("wrong\n")
    for f in (good, bad):
        os.chmod(f, 0o600)
    fwd = _through(start_tlsfwd, service, "localhost:%d" % up.port, sq.port, user="app@",
                   via_password_file=str(good))
    hs, _ = _fetch(fwd)
    assert hs["result"] == "ok", hs
    fwd2 = _through(start_tlsfwd, service, "localhost:%d" % up.port, sq.port, user="app@",
                    via_password_file=str(bad))
    hs, _ = _fetch(fwd2)
    assert (hs["result"], hs["stage"]) == ("fail", "proxy"), hs
    assert "407" in hs["error"], hs


def test_a_password_file_others_can_read_is_refused(check_ini, service, tmp_path):
    pw = tmp_path / "p.pass"
    pw.write_text("x\n")
    os.chmod(pw, 0o644)
    rc, errs, _, _ = check_ini({"svc": service("localhost:443", via="http://app@127.0.0.1:3128",
                                               via_password_file=str(pw))})
    assert rc != 0 and any("via_password_file" in m and "others" in m for _, _, m in errs), errs


def test_a_403_from_an_acl_fails_with_stage_proxy_then_fails_over(openssl_server, squid,
                                                                  service, start_tlsfwd):
    blocked = openssl_server("server", "-www")
    ok = openssl_server("server", "-www")
    sq = squid(deny_port=blocked.port)
    fwd = _through(start_tlsfwd, service, "localhost:%d" % blocked.port, sq.port)
    hs, _ = _fetch(fwd)
    assert (hs["result"], hs["stage"]) == ("fail", "proxy"), hs
    assert re.search(r"HTTP/1\.1 403 Forbidden", hs["error"]), hs
    fwd2 = _through(start_tlsfwd, service, "localhost:%d, localhost:%d" % (blocked.port, ok.port),
                    sq.port)
    hs, _ = _fetch(fwd2)
    assert hs["result"] == "ok" and int(hs["attempts"]) == 2, hs
    att = fwd2.wait_event("attempt", service="svc")
    assert att["stage"] == "proxy" and "403" in att["error"], att


def test_a_proxy_that_never_answers_times_out(cleanup, service, start_tlsfwd):
    silent = SilentHolder()
    cleanup.append(silent)
    fwd = _through(start_tlsfwd, service, "localhost:443", silent.port, connect_timeout="500ms")
    t0 = time.monotonic()
    hs, _ = _fetch(fwd)
    assert (hs["result"], hs["stage"], hs["timeout"]) == ("fail", "timeout", "proxy"), hs
    assert 0.45 < time.monotonic() - t0 < 3


def _combined_pem(pki, d):
    path = os.path.join(d, "server-combined.pem")
    with open(path, "w") as out:
        for p in (pki["server"], pki["server_key"]):
            with open(p) as f:
                out.write(f.read())
    return path


def _haproxy(pki, d):
    pem = _combined_pem(pki, d)

    def argv(port):
        conf = os.path.join(d, "haproxy.cfg")
        with open(conf, "w") as f:
            f.write("global\n  log stdout format raw local0\n"
                    "defaults\n  mode http\n  log global\n  timeout connect 5s\n"
                    "  timeout client 10s\n  timeout server 10s\n"
                    "frontend fe\n  bind 127.0.0.1:%d ssl crt %s accept-proxy\n" % (port, pem) +
                    '  log-format "seen=%ci:%cp"\n'
                    '  http-request return status 200 content-type text/plain '
                    'lf-string "seen=%[src]:%[src_port]\\n"\n')
        return ["haproxy", "-db", "-f", conf]
    return start_server("haproxy", d, pki, argv, ready="tcp")


def _nginx(pki, d):
    def argv(port):
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write("pid %s/nginx.pid;\nerror_log %s/error.log;\ndaemon off;\n" % (d, d) +
                    "events {}\nhttp {\n"
                    "  client_body_temp_path %s; proxy_temp_path %s; fastcgi_temp_path %s;\n"
                    % (d, d, d) +
                    "  uwsgi_temp_path %s; scgi_temp_path %s;\n" % (d, d) +
                    "  log_format pp 'seen=$proxy_protocol_addr:$proxy_protocol_port';\n"
                    "  server {\n    listen 127.0.0.1:%d ssl proxy_protocol;\n" % port +
                    "    ssl_certificate %s; ssl_certificate_key %s;\n"
                    % (pki["server"], pki["server_key"]) +
                    "    access_log %s/access.log pp;\n" % d +
                    '    location / { return 200 "seen=$proxy_protocol_addr:'
                    '$proxy_protocol_port\\n"; }\n  }\n}\n')
        return ["nginx", "-c", conf, "-p", d]
    return start_server("nginx", d, pki, argv, ready="tcp")


@pytest.mark.parametrize("server", ["haproxy", "nginx"])
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_upstream_logs_the_real_client(version, server, pki, tmp_path, cleanup, service,
                                           start_tlsfwd):
    if shutil.which(server) is None:
        pytest.fail("%s is not installed: run `make deps`" % server)
    d = str(tmp_path / server)
    os.makedirs(d)
    srv = (_haproxy if server == "haproxy" else _nginx)(pki, d)
    cleanup.append(srv)
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port, proxy_protocol=version,
                                       verify_hostname=None)})
    s = connect(fwd.ports["svc"])
    client = "%s:%d" % s.getsockname()[:2]
    fwd.client_service[(s.getsockname()[:2], s.getpeername()[:2])] = "svc"
    s.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
    body = recv_all(s)
    assert fwd.conn_of(s)["result"] == "ok"
    s.close()
    assert b"seen=" + client.encode() in body, body
    _wait_in_file(os.path.join(d, "access.log") if server == "nginx" else srv.log_path,
                  "seen=" + client)


def _answers_ssh(raw):
    raw.recv(4096)
    raw.sendall(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
    time.sleep(1)


def _answers_endless_headers(raw):
    raw.recv(4096)
    raw.sendall(b"HTTP/1.1 200 OK\r\n" + b"X-Padding: " + b"a" * 9000)
    time.sleep(1)


@pytest.mark.parametrize("handler,words", [(_answers_ssh, "not an HTTP answer"),
                                           (_answers_endless_headers, "over 8192 bytes")],
                         ids=["malformed", "oversized"])
def test_a_bad_proxy_answer_fails_with_stage_proxy(handler, words, raw_upstream, service,
                                                   start_tlsfwd):
    proxy = raw_upstream(handler)
    fwd = _through(start_tlsfwd, service, "localhost:443", proxy.port)
    hs, _ = _fetch(fwd)
    assert (hs["result"], hs["stage"]) == ("fail", "proxy") and words in hs["error"], hs
