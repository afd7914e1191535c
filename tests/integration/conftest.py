"""Fixtures for the tlsfwd integration tests.

The binary under test comes only from $TLSFWD (default: <repo>/build/tlsfwd),
so the same suite runs against the normal and the ASan+UBSan build.
"""

import os
import resource
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))  # tests/ for pki.py

import pki as pki_mod  # noqa: E402
from harness.clients import close_quietly, connect  # noqa: E402
from harness.config import render_ini  # noqa: E402
from harness.daemon import check_config, Tlsfwd  # noqa: E402
from harness.systemd import fds_at_3, NotifySocket  # noqa: E402
from harness.upstreams import OpenSSLServer, server_context, SilentHolder, Upstream  # noqa: E402
from harness.wrapper import SOCK_TIMEOUT  # noqa: E402


@pytest.fixture(scope="session")
def tlsfwd_bin():
    path = os.environ.get("TLSFWD") or os.path.join(REPO, "build", "tlsfwd")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail("tlsfwd binary not found at %s (run `make`, or set TLSFWD)" % path)
    return os.path.abspath(path)


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return pki_mod.make_pki(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture(scope="session")
def asan_build(tlsfwd_bin):
    """Whether tlsfwd is the ASan build: its memory figures are not the product's."""
    with open(tlsfwd_bin, "rb") as f:
        return b"__asan_init" in f.read()


@pytest.fixture(scope="session")
def rss_limit_kib(asan_build):
    """How much tlsfwd may grow while a transfer is stalled. ASan's quarantine keeps
    freed buffers resident, so its bound is looser (the stall itself is the main check)."""
    return (128 if asan_build else 32) * 1024


@pytest.fixture
def cleanup():
    """Things to close at teardown (servers, sockets), closed in reverse order."""
    items = []
    yield items
    for it in reversed(items):
        try:
            it.close()
        except Exception:  # noqa: BLE001
            pass


@pytest.fixture
def ssl_upstream(pki, cleanup):
    """ssl_upstream(handler, cert='server', mode='ssl', max_version=None, client_ca=None)."""
    def make(handler, cert="server", mode="ssl", key=None, **ctx_kw):
        ctx = server_context(pki[cert], key or pki[cert + "_key"], **ctx_kw)
        up = Upstream(handler, mode=mode, ctx=ctx)
        cleanup.append(up)
        return up
    return make


@pytest.fixture
def raw_upstream(cleanup):
    def make(handler):
        up = Upstream(handler, mode="raw")
        cleanup.append(up)
        return up
    return make


@pytest.fixture
def openssl_server(pki, cleanup):
    """openssl_server(cert_name, *s_server_args) -> OpenSSLServer."""
    def make(cert, *args, chain=None):
        srv = OpenSSLServer(pki[cert], pki[cert + "_key"], *args,
                              chain=pki[chain] if chain else None)
        cleanup.append(srv)
        return srv
    return make


@pytest.fixture
def silent_upstream(cleanup):
    def make():
        s = SilentHolder()
        cleanup.append(s)
        return s
    return make


@pytest.fixture
def service(pki):
    """service(upstream_port_or_hostport, **overrides) -> dict of service keys.

    Generous timeouts by default; tests that exercise a timeout override it.
    A value of None drops the key.
    """
    def make(upstream, **over):
        if isinstance(upstream, int):
            upstream = "127.0.0.1:%d" % upstream
        opts = {
            "listen": "127.0.0.1:0",
            "upstream": upstream,
            "ca_file": pki["ca"],
            "connect_timeout": "3s",
            "handshake_timeout": "5s",
            "idle_timeout": "30s",
        }
        opts.update(over)
        return opts
    return make


@pytest.fixture
def start_tlsfwd(tlsfwd_bin, tmp_path):
    """start_tlsfwd({name: service_dict}, global_opts=None, ready=True, nofile=None,
    env=None, argv=None, listen_fds=None, journal_stream=False, confdir=None) -> Tlsfwd.

    Writes the INI, starts `tlsfwd -c FILE`, waits for event=ready and reads the
    ports from the event=listening lines. At teardown: closes client sockets,
    SIGTERMs tlsfwd and fails the test on a sanitizer report, a non-zero exit,
    unparsable log lines, or a connection without exactly one handshake and
    one close line.

    env: extra environment (see Tlsfwd); argv: command wrapper such as
    with_listen_pid; listen_fds: sockets (fds) passed at 3, 4, ... like
    systemd does; journal_stream: set JOURNAL_STREAM to tlsfwd's stderr;
    confdir: directory for the config file and run files instead of tmp_path.
    """
    procs = []

    def start(services, global_opts=None, ready=True, name="tlsfwd.ini", nofile=None,
              env=None, argv=None, listen_fds=None, journal_stream=False, confdir=None):
        g = {"log_level": "info", "log_format": "logfmt", "shutdown_timeout": "2s"}
        g.update(global_opts or {})
        base = Path(confdir) if confdir is not None else tmp_path
        path = base / ("%d-%s" % (len(procs), name))
        path.write_bytes(render_ini(g, services).encode("utf-8", "surrogateescape"))
        workdir = base / ("run%d" % len(procs))
        workdir.mkdir()
        preexec = None
        if nofile is not None:
            def preexec():
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        pass_fds = ()
        if listen_fds:
            preexec = fds_at_3(listen_fds, then=preexec)
            pass_fds = range(3, 3 + len(listen_fds))
        fwd = Tlsfwd(tlsfwd_bin, str(path), log_format=g["log_format"], workdir=str(workdir),
                       preexec_fn=preexec, env=env, argv=argv, pass_fds=pass_fds,
                       journal_stream=journal_stream)
        fwd.global_opts = g
        fwd.clients = []
        procs.append(fwd)
        if ready:
            fwd.wait_ready(10.0)
        return fwd

    yield start

    problems = []
    for fwd in procs:
        for c in fwd.clients:
            close_quietly(c)
        problems += fwd.stop()
    if problems:
        pytest.fail("tlsfwd teardown checks failed:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture
def short_dir():
    """A fresh directory with a short path (AF_UNIX paths are limited to 107
    bytes; pytest's tmp_path can be long), mode 0755. Removed at teardown."""
    dirs = []

    def make(prefix="tlsfwd-"):
        d = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
        os.chmod(d, 0o755)
        dirs.append(d)
        return d
    yield make
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def notify(short_dir, cleanup):
    """notify() -> NotifySocket bound in a fresh short directory; pass
    env={"NOTIFY_SOCKET": n.path} to start_tlsfwd. Request it before
    start_tlsfwd so that it outlives tlsfwd (STOPPING=1 at teardown)."""
    def make():
        n = NotifySocket(os.path.join(short_dir("tlsfwd-n"), "notify"))
        cleanup.append(n)
        return n
    return make


@pytest.fixture
def client(start_tlsfwd):
    """client(fwd, service='svc') -> connected plain TCP socket (closed at teardown)."""
    def make(fwd, service="svc", timeout=SOCK_TIMEOUT):
        s = connect(fwd.ports[service], timeout)
        fwd.clients.append(s)
        # Two sockets to different listeners may share a source port, so
        # conn_of also needs to know which service this one went to.
        fwd.client_service[(s.getsockname()[:2], s.getpeername()[:2])] = service
        return s
    return make


@pytest.fixture
def check_ini(tlsfwd_bin, tmp_path):
    """check_ini({name: service_dict}, global_opts=None) -> (rc, errors, text, path).

    Writes the INI like start_tlsfwd does and runs `tlsfwd -t -c FILE`; errors is
    a list of (file, line, message) from check_config."""
    count = [0]

    def run(services, global_opts=None):
        g = {"log_level": "info", "log_format": "logfmt", "shutdown_timeout": "2s"}
        g.update(global_opts or {})
        text = render_ini(g, services)
        path = tmp_path / ("check%d.ini" % count[0])
        count[0] += 1
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
        rc, errors, _err = check_config(tlsfwd_bin, path)
        return rc, errors, text, str(path)
    return run
