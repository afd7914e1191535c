"""Fixtures for the tlsfwd integration tests.

The binary under test comes only from $TLSFWD (default: <repo>/build/tlsfwd),
so the same suite runs against the normal and the ASan+UBSan build.
"""

import os
import resource
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))  # tests/ for pki.py

import pki as pki_mod  # noqa: E402
import tlsfwd_helpers as H  # noqa: E402


@pytest.fixture(scope="session")
def tlsfwd_bin():
    path = os.environ.get("TLSFWD") or os.path.join(REPO, "build", "tlsfwd")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail("tlsfwd binary not found at %s (run `make`, or set TLSFWD)" % path)
    return os.path.abspath(path)


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return pki_mod.make_pki(str(tmp_path_factory.mktemp("pki")))


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
        ctx = H.server_context(pki[cert], key or pki[cert + "_key"], **ctx_kw)
        up = H.Upstream(handler, mode=mode, ctx=ctx)
        cleanup.append(up)
        return up
    return make


@pytest.fixture
def raw_upstream(cleanup):
    def make(handler):
        up = H.Upstream(handler, mode="raw")
        cleanup.append(up)
        return up
    return make


@pytest.fixture
def openssl_server(pki, cleanup):
    """openssl_server(cert_name, *s_server_args) -> OpenSSLServer."""
    def make(cert, *args, chain=None):
        srv = H.OpenSSLServer(pki[cert], pki[cert + "_key"], *args,
                              chain=pki[chain] if chain else None)
        cleanup.append(srv)
        return srv
    return make


@pytest.fixture
def silent_upstream(cleanup):
    def make():
        s = H.SilentHolder()
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
    """start_tlsfwd({name: service_dict}, global_opts=None, ready=True, nofile=None) -> Tlsfwd.

    Writes the INI, starts `tlsfwd -c FILE`, waits for event=ready and reads the
    ports from the event=listening lines. At teardown: closes client sockets,
    SIGTERMs tlsfwd and fails the test on a sanitizer report, a non-zero exit,
    unparsable log lines, or a connection without exactly one handshake and
    one close line.
    """
    procs = []

    def start(services, global_opts=None, ready=True, name="tlsfwd.ini", nofile=None):
        g = {"log_level": "info", "log_format": "logfmt", "shutdown_timeout": "2s"}
        g.update(global_opts or {})
        path = tmp_path / ("%d-%s" % (len(procs), name))
        path.write_text(H.render_ini(g, services))
        workdir = tmp_path / ("run%d" % len(procs))
        workdir.mkdir()
        preexec = None
        if nofile is not None:
            def preexec():
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        fwd = H.Tlsfwd(tlsfwd_bin, str(path), log_format=g["log_format"], workdir=str(workdir),
                       preexec_fn=preexec)
        fwd.clients = []
        procs.append(fwd)
        if ready:
            fwd.wait_ready(10.0)
        return fwd

    yield start

    problems = []
    for fwd in procs:
        for c in fwd.clients:
            H._close(c)
        problems += fwd.stop()
    if problems:
        pytest.fail("tlsfwd teardown checks failed:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture
def client(start_tlsfwd):
    """client(fwd, service='svc') -> connected plain TCP socket (closed at teardown)."""
    def make(fwd, service="svc", timeout=H.SOCK_TIMEOUT):
        s = H.connect(fwd.ports[service], timeout)
        fwd.clients.append(s)
        return s
    return make
