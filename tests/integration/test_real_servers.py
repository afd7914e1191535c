"""Real Debian servers as TLS upstreams: redis-server, slapd, mosquitto.

Each module-scoped fixture starts its own instance on a free loopback port,
TLS only, in a temporary directory with its own configuration and data,
with the test PKI's `server` certificate (CN/SAN localhost) and `ca`. The
instances that the Debian packages may have started (redis on 6379, slapd on
389, mosquitto on 1883) are neither used nor touched. Clients are the
packages' own tools (redis-cli, ldapsearch/ldapadd, mosquitto_pub/_sub) or
small Python clients on a plain socket, always through tlsfwd. Every
connection must have a `result=ok` handshake line (or, for the refusals, the
alert the server sent) and a close line; what the close lines say about the
upstream's close_notify is checked by assert_clean_close.
"""

import collections
import concurrent.futures
import hashlib
import itertools
import os
import shutil
import subprocess
import threading
import time

import pytest

from harness.clients import connect, recv_closed, send_quiet
from harness.daemon import child_env, wait_count
from harness.data import det_bytes
from harness.logfmt import num
from harness.servers import start_server
from harness.wrapper import SLOW

CLIENT_CN = "CN=tlsfwd test client"
TOOL_TIMEOUT = 30.0 * SLOW       # the clients wait for tlsfwd, slower under valgrind


def tool(name):
    """The path of a packaged tool: `make deps` installs them (DEB_PKGS), so a
    missing one is a failure, not a skip."""
    for d in ("/usr/bin", "/usr/sbin"):
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    p = shutil.which(name)
    if p is None:
        pytest.fail("%s is not installed (run `make deps`)" % name, pytrace=False)
    return p


# ---------------------------------------------------------------------------
# close lines
# ---------------------------------------------------------------------------

# Every close line seen by assert_clean_close, as (test, reason, level,
# close_notify); printed at the end of the module (seen with `pytest -s`).
CLOSES = []


def assert_clean_close(cl):
    """A connection that ended normally: the client finished, tlsfwd sent its
    close_notify upstream, and the server closed. Servers such as redis close
    TCP without a close_notify of their own; that loses nothing when the client
    had finished, tlsfwd's close_notify was out and the upstream sent nothing
    more afterwards, and README's rule for that case is `reason=done` at info
    with `close_notify=no`. A server that answers with its close_notify gets
    `reason=done` without the field. `upstream_truncated` is wrong here."""
    CLOSES.append((os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0],
                   cl.get("reason"), cl.get("level"), cl.get("close_notify", "(absent)")))
    assert cl["reason"] == "done", cl
    assert cl["level"] == "info", cl
    assert cl.get("close_notify", "yes") in ("yes", "no"), cl


def show(fwd, hs, cl):
    """Print a connection's two lines (seen with `pytest -s`)."""
    for r in (hs, cl):
        print("\n  " + next(ln for ln in fwd.lines if "event=%s " % r["event"] in ln
                              and " conn=%s " % r["conn"] in ln), end="")
    print()


def connections(fwd, n, timeout=20.0):
    """Wait for n handshake lines and the close line of each; [(hs, cl)] in
    connection order."""
    hss = wait_count(fwd, "handshake", n, timeout)
    out = []
    for hs in hss:
        out.append((hs, fwd.wait_close(hs["conn"], timeout)))
    out.sort(key=lambda p: num(p[0]["conn"]))
    return out


def assert_all_ok(fwd, n, client_cert=False):
    """Exactly n connections so far, each with result=ok and a clean close."""
    pairs = connections(fwd, n)
    assert len(fwd.find("handshake")) == n, fwd.log_text(4 * n)
    for hs, cl in pairs:
        assert hs["result"] == "ok", "\n" + fwd.log_text(4 * n)
        assert hs["verify"] == "ok" and "CN=localhost" in hs["peer"], hs
        if client_cert:
            assert CLIENT_CN in hs["client_cert"], hs
        assert_clean_close(cl)
    return pairs


def summarize(pairs):
    """{(result, alert / errno / gnutls_error): count} for the failure messages."""
    c = collections.Counter()
    for hs, cl in pairs:
        c[(hs.get("result"), hs.get("alert") or hs.get("errno") or hs.get("gnutls_error"),
           cl.get("reason"))] += 1
    return dict(c)


@pytest.fixture(scope="module", autouse=True)
def _print_closes():
    yield
    if CLOSES:
        print("\nclose lines (test, reason, level, close_notify):")
        for row in CLOSES:
            print("  %s reason=%s level=%s close_notify=%s" % row)


# ---------------------------------------------------------------------------
# server processes
# ---------------------------------------------------------------------------

def run_tool(argv, input=None, timeout=TOOL_TIMEOUT, env=None):
    r = subprocess.run(argv, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout, env=child_env(env))
    assert r.returncode == 0, "%s: rc=%d\nstdout: %r\nstderr: %s" % (
        " ".join(argv), r.returncode, r.stdout[-500:], r.stderr.decode(errors="replace"))
    return r.stdout


# ---------------------------------------------------------------------------
# redis
# ---------------------------------------------------------------------------

def resp_command(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Resp:
    """A minimal RESP2 reader over a plain socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            self._more()

    def _more(self):
        d = self.sock.recv(1 << 20)
        if not d:
            raise AssertionError("EOF from redis (through tlsfwd)")
        self.buf += d

    def read(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t in (b"+", b"-"):
            return rest.decode() if t == b"+" else RuntimeError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._more()
            data = bytes(self.buf[:n])
            del self.buf[:n + 2]
            return data
        if t == b"*":
            return [self.read() for _ in range(int(rest))]
        raise AssertionError("bad RESP line %r" % line)


def redis_server(tmp_path_factory, pki, auth_clients):
    d = str(tmp_path_factory.mktemp("redis-" + auth_clients))

    def argv(port):
        return [tool("redis-server"), "--bind", "127.0.0.1", "--port", "0",
                "--tls-port", str(port),
                "--tls-cert-file", pki["server"], "--tls-key-file", pki["server_key"],
                "--tls-ca-cert-file", pki["ca"], "--tls-auth-clients", auth_clients,
                "--dir", d, "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--logfile", "", "--protected-mode", "no", "--databases", "1"]
    return start_server("redis-server (tls-auth-clients %s)" % auth_clients, d, pki, argv)


@pytest.fixture(scope="module")
def redis_plain(tmp_path_factory, pki):
    srv = redis_server(tmp_path_factory, pki, "no")
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def redis_mtls(tmp_path_factory, pki):
    srv = redis_server(tmp_path_factory, pki, "yes")
    yield srv
    srv.close()


def redis_cli(port, *args, input=None):
    return run_tool([tool("redis-cli"), "-h", "127.0.0.1", "-p", str(port)] + list(args),
                    input=input)


def test_redis_ping(redis_plain, service, start_tlsfwd):
    fwd = start_tlsfwd({"svc": service("localhost:%d" % redis_plain.port)})
    assert redis_cli(fwd.ports["svc"], "PING") == b"PONG\n"
    assert_all_ok(fwd, 1)


def test_redis_5mib_set_get(redis_plain, service, start_tlsfwd, client):
    fwd = start_tlsfwd({"svc": service("localhost:%d" % redis_plain.port)})
    port = fwd.ports["svc"]
    total = 5 << 20
    data = det_bytes("redis-5mib", total)
    want = hashlib.sha256(data).hexdigest()
    assert redis_cli(port, "-x", "SET", "big", input=data) == b"OK\n"
    # back through redis-cli (raw output: the value and a newline) ...
    out = redis_cli(port, "GET", "big")
    assert len(out) == total + 1 and hashlib.sha256(out[:-1]).hexdigest() == want
    # ... and through a RESP client on a plain socket
    s = client(fwd)
    s.sendall(resp_command("GET", "big") + resp_command("STRLEN", "big"))
    r = Resp(s)
    got = r.read()
    assert isinstance(got, bytes) and len(got) == total
    assert hashlib.sha256(got).hexdigest() == want
    assert r.read() == total
    s.close()
    pairs = assert_all_ok(fwd, 3)
    assert [num(cl["bytes_up"]) >= total for _hs, cl in pairs] == [True, False, False], pairs
    assert [num(cl["bytes_down"]) >= total for _hs, cl in pairs] == [False, True, True], pairs


def test_redis_subscribe_100_publishes_in_order(redis_plain, service, start_tlsfwd, client):
    fwd = start_tlsfwd({"svc": service("localhost:%d" % redis_plain.port)})
    sub = client(fwd)
    sub.sendall(resp_command("SUBSCRIBE", "tlsfwd-news"))
    r = Resp(sub)
    assert r.read() == [b"subscribe", b"tlsfwd-news", 1]
    msgs = ["msg-%03d %s" % (i, "x" * i) for i in range(100)]
    # one redis-cli through tlsfwd, one PUBLISH per stdin line, in order
    script = "".join('PUBLISH tlsfwd-news "%s"\n' % m for m in msgs).encode()
    out = redis_cli(fwd.ports["svc"], input=script)
    assert out.split() == [b"1"] * 100, out[:300]        # one subscriber each time
    for m in msgs:
        assert r.read() == [b"message", b"tlsfwd-news", m.encode()]
    sub.sendall(resp_command("UNSUBSCRIBE"))
    assert r.read() == [b"unsubscribe", b"tlsfwd-news", 0]
    sub.close()
    assert_all_ok(fwd, 2)


# -- tls-auth-clients yes, tlsfwd without a client certificate ----------------

def ping_until_closed(port):
    """Connect, send PING right away, read until the connection ends."""
    s = connect(port)
    try:
        send_quiet(s, b"PING\r\n")
        data, _how = recv_closed(s)
        return data
    finally:
        s.close()


def assert_all_refused(fwd, n, datas):
    pairs = connections(fwd, n)
    assert len(pairs) == n
    bad = [hs for hs, _cl in pairs
           if (hs["result"], hs.get("alert"), hs.get("alert_from"))
           != ("alert", "certificate_required", "upstream")]
    assert not bad, ("%d of %d handshake lines are not result=alert "
                     "alert=certificate_required alert_from=upstream: %s\nfirst: %s"
                     % (len(bad), n, summarize(pairs), bad[0]))
    assert all(cl["reason"] == "handshake_failed" and num(cl["bytes_down"]) == 0
               for _hs, cl in pairs), summarize(pairs)
    assert all(d == b"" for d in datas), [d for d in datas if d][:3]


def test_redis_requiring_client_cert_refuses_sequential(redis_mtls, service, start_tlsfwd):
    fwd = start_tlsfwd({"svc": service("localhost:%d" % redis_mtls.port)})
    datas = [ping_until_closed(fwd.ports["svc"]) for _ in range(60)]
    assert_all_refused(fwd, 60, datas)


def test_redis_requiring_client_cert_refuses_concurrent(redis_mtls, service, start_tlsfwd):
    fwd = start_tlsfwd({"svc": service("localhost:%d" % redis_mtls.port)})
    datas = []
    with concurrent.futures.ThreadPoolExecutor(30) as ex:
        for _batch in range(4):
            datas += list(ex.map(lambda _i: ping_until_closed(fwd.ports["svc"]), range(30)))
    assert_all_refused(fwd, 120, datas)


# ---------------------------------------------------------------------------
# slapd (ldaps, TLSVerifyClient demand)
# ---------------------------------------------------------------------------

LDAP_BASE = "dc=tlsfwd,dc=test"
LDAP_ADMIN = "cn=admin," + LDAP_BASE
LDAP_PW = "tlsfwd-secret"
LDAP_UNBIND = bytes.fromhex("30050201014200")   # UnbindRequest, messageID 1
LDAP_ENV = {"LDAPNOINIT": "1"}                   # no /etc/ldap/ldap.conf, ~/.ldaprc


@pytest.fixture(scope="module")
def slapd(tmp_path_factory, pki):
    d = str(tmp_path_factory.mktemp("slapd"))
    os.mkdir(os.path.join(d, "db"))
    conf = os.path.join(d, "slapd.conf")
    with open(conf, "w") as f:
        f.write("""include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile {d}/slapd.pid
argsfile {d}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
TLSCACertificateFile {ca}
TLSCertificateFile {cert}
TLSCertificateKeyFile {key}
TLSVerifyClient demand
database mdb
maxsize 16777216
suffix "{base}"
rootdn "{admin}"
rootpw {pw}
directory {d}/db
""".format(d=d, ca=pki["ca"], cert=pki["server"], key=pki["server_key"], base=LDAP_BASE,
           admin=LDAP_ADMIN, pw=LDAP_PW))
    ldif = os.path.join(d, "base.ldif")
    with open(ldif, "w") as f:
        f.write("""dn: {base}
objectClass: dcObject
objectClass: organization
o: tlsfwd tests
dc: tlsfwd

dn: cn=alice,{base}
objectClass: inetOrgPerson
cn: alice
sn: Example
mail: alice@tlsfwd.test
""".format(base=LDAP_BASE))
    run_tool([tool("slapadd"), "-f", conf, "-l", ldif])
    # -d 0: stay in the foreground (no fork, no syslog); as root, no -u/-g:
    # the temporary directory and the keys belong to root.
    srv = start_server("slapd", d, pki, lambda port: [
        tool("slapd"), "-d", "0", "-f", conf, "-h", "ldaps://127.0.0.1:%d/" % port])
    yield srv
    srv.close()


def ldap_fwd(slapd, service, start_tlsfwd, pki):
    return start_tlsfwd({"svc": service("localhost:%d" % slapd.port, cert_file=pki["client"],
                                        key_file=pki["client_key"])})


def ldapsearch(port, *args):
    return run_tool([tool("ldapsearch"), "-x", "-LLL", "-H", "ldap://127.0.0.1:%d" % port,
                     "-b", LDAP_BASE] + list(args), env=LDAP_ENV).decode()


def test_ldap_search_and_add(slapd, service, start_tlsfwd, pki):
    fwd = ldap_fwd(slapd, service, start_tlsfwd, pki)
    port = fwd.ports["svc"]
    out = ldapsearch(port, "(cn=alice)", "mail")
    assert "dn: cn=alice,%s" % LDAP_BASE in out and "mail: alice@tlsfwd.test" in out, out
    name = "bob-%d" % os.getpid()
    run_tool([tool("ldapadd"), "-x", "-H", "ldap://127.0.0.1:%d" % port, "-D", LDAP_ADMIN,
              "-w", LDAP_PW], env=LDAP_ENV, input=(
        "dn: cn={n},{b}\nobjectClass: inetOrgPerson\ncn: {n}\nsn: Added\n"
        "mail: {n}@tlsfwd.test\n".format(n=name, b=LDAP_BASE)).encode())
    out = ldapsearch(port, "(cn=%s)" % name, "mail")
    assert "mail: %s@tlsfwd.test" % name in out, out
    assert_all_ok(fwd, 3, client_cert=True)


def test_ldap_unbind_and_close(slapd, service, start_tlsfwd, client, pki):
    """One small request (an UnbindRequest), then the client closes at once:
    slapd accepts the certificate, reads the unbind and hangs up."""
    fwd = ldap_fwd(slapd, service, start_tlsfwd, pki)
    s = client(fwd)
    s.sendall(LDAP_UNBIND)
    hs = fwd.conn_of(s)
    s.close()
    cl = fwd.wait_close(hs["conn"])
    show(fwd, hs, cl)
    assert (hs["result"], cl["reason"]) == ("ok", "done"), "\n" + fwd.log_text(4)
    assert CLIENT_CN in hs["client_cert"], hs
    assert num(cl["bytes_up"]) == len(LDAP_UNBIND) and num(cl["bytes_down"]) == 0, cl


def test_ldap_health_check_connect_and_close(slapd, service, start_tlsfwd, client, pki):
    """A TCP health check: connect to tlsfwd and close at once without a byte.
    tlsfwd has already begun its handshake with slapd (the upstream connect
    starts at accept); it is expected to finish it and log result=ok, and to
    close without a failure."""
    fwd = ldap_fwd(slapd, service, start_tlsfwd, pki)
    s = client(fwd)
    s.close()
    hs = fwd.wait_event("handshake", 10, service="svc")
    cl = fwd.wait_close(hs["conn"])
    show(fwd, hs, cl)
    assert hs["result"] == "ok", "\n" + fwd.log_text(4)
    assert cl["reason"] == "done" and cl["level"] == "info", cl
    assert num(cl["bytes_up"]) == 0 and num(cl["bytes_down"]) == 0, cl


# ---------------------------------------------------------------------------
# mosquitto (TLS listener, no client certificate)
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory, pki):
    d = str(tmp_path_factory.mktemp("mosquitto"))

    def argv(port):
        conf = os.path.join(d, "mosquitto-%d.conf" % port)
        with open(conf, "w") as f:
            # `user root`: no switch to the mosquitto user, who cannot read the
            # keys; the only listener is the TLS one (no port 1883 default).
            f.write("""user root
persistence false
log_dest stdout
log_type error
log_type warning
log_type notice
allow_anonymous true
max_queued_messages 0
listener {port} 127.0.0.1
cafile {ca}
certfile {cert}
keyfile {key}
require_certificate false
""".format(port=port, ca=pki["ca"], cert=pki["server"], key=pki["server_key"]))
        return [tool("mosquitto"), "-c", conf]
    srv = start_server("mosquitto", d, pki, argv)
    yield srv
    srv.close()


class MqttSub:
    """mosquitto_sub -d -v through tlsfwd; stdout lines gathered by a thread
    (line-buffered by stdbuf: on a pipe, its debug lines would wait for exit)."""

    _ids = itertools.count()

    def __init__(self, port, topic, count):
        self.proc = subprocess.Popen(
            [tool("stdbuf"), "-oL", tool("mosquitto_sub"), "-h", "127.0.0.1", "-p", str(port),
             "-t", topic, "-q", "1", "-C", str(count), "-v", "-d",
             "-i", "tlsfwd-sub-%d-%d" % (os.getpid(), next(MqttSub._ids)),
             "-W", str(int(TOOL_TIMEOUT))],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self):
        for raw in iter(self.proc.stdout.readline, b""):
            with self.cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self.cond.notify_all()

    def wait_line(self, substr, timeout=10.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not any(substr in ln for ln in self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError("mosquitto_sub never printed %r:\n%s"
                                         % (substr, "\n".join(self.lines[-20:])))
                self.cond.wait(min(left, 0.2))

    def messages(self, topic, timeout=TOOL_TIMEOUT):
        """Wait for the exit (-C COUNT reached); the `TOPIC PAYLOAD` lines."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise AssertionError("mosquitto_sub still running after %gs; %d lines, last:\n%s"
                                 % (timeout, len(self.lines), "\n".join(self.lines[-10:])))
        self.thread.join(5)
        assert rc == 0, "mosquitto_sub rc=%d:\n%s" % (rc, "\n".join(self.lines[-20:]))
        return [ln[len(topic) + 1:] for ln in self.lines if ln.startswith(topic + " ")]

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def mosquitto_pub(port, *args, input=None):
    return run_tool([tool("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(port)] + list(args),
                    input=input)


def test_mqtt_1000_qos1_messages_in_order(mosquitto, service, start_tlsfwd, cleanup):
    fwd = start_tlsfwd({"svc": service("localhost:%d" % mosquitto.port)})
    port = fwd.ports["svc"]
    topic = "tlsfwd/stream"
    sub = MqttSub(port, topic, 1000)
    cleanup.append(sub)
    sub.wait_line("received SUBACK")
    msgs = ["m%04d-%s" % (i, "y" * (i % 50)) for i in range(1000)]
    # -l: one message per stdin line, over one connection, QoS 1
    mosquitto_pub(port, "-t", topic, "-q", "1", "-l",
                  input="".join(m + "\n" for m in msgs).encode())
    got = sub.messages(topic)
    assert len(got) == 1000, (len(got), got[:3], got[-3:])
    assert got == msgs, next((i, a, b) for i, (a, b) in enumerate(zip(got, msgs)) if a != b)
    assert_all_ok(fwd, 2)


def test_mqtt_retained_message_reaches_later_subscriber(mosquitto, service, start_tlsfwd,
                                                        cleanup):
    fwd = start_tlsfwd({"svc": service("localhost:%d" % mosquitto.port)})
    port = fwd.ports["svc"]
    topic = "tlsfwd/retained-%d" % os.getpid()
    mosquitto_pub(port, "-t", topic, "-q", "1", "-r", "-m", "kept for later")
    wait_count(fwd, "close", 1)          # the publisher is gone before anyone subscribes
    sub = MqttSub(port, topic, 1)
    cleanup.append(sub)
    assert sub.messages(topic) == ["kept for later"]
    assert_all_ok(fwd, 2)
