"""Signals: SIGTERM/SIGINT drain, shutdown_timeout, a second SIGTERM, SIGHUP."""

import signal
import socket
import time

import pytest

from harness.clients import recv_all, recv_closed, recv_exact
from harness.upstreams import SilentHolder, echo_handler


def assert_refused(port):
    with pytest.raises(ConnectionRefusedError):
        c = socket.create_connection(("127.0.0.1", port), timeout=5)
        c.close()


def test_sigterm_without_connections_exits_0(ssl_upstream, service, start_tlsfwd):
    up = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service(up.port)}, {"shutdown_timeout": "10s"})
    t0 = time.monotonic()
    fwd.signal(signal.SIGTERM)
    assert fwd.wait_exit(5) == 0
    assert time.monotonic() - t0 < 3.0
    fwd.wait_event("signal", 1)
    fwd.wait_event("exit", 1)
    assert_refused(fwd.ports["svc"])


def test_sigint_like_sigterm(ssl_upstream, service, start_tlsfwd):
    up = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service(up.port)}, {"shutdown_timeout": "10s"})
    fwd.signal(signal.SIGINT)
    assert fwd.wait_exit(5) == 0
    fwd.wait_event("exit", 1)


def test_sigterm_drains_open_connection(ssl_upstream, service, start_tlsfwd, client):
    up = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service(up.port)}, {"shutdown_timeout": "10s"})
    s = client(fwd)
    s.sendall(b"before")
    assert recv_exact(s, 6) == b"before"
    hs = fwd.conn_of(s)

    t0 = time.monotonic()
    fwd.signal(signal.SIGTERM)
    drain = fwd.wait_event("drain", 5)
    assert str(drain["connections"]) == "1", drain
    assert_refused(fwd.ports["svc"])          # stopped accepting at once
    assert fwd.proc.poll() is None

    s.sendall(b"after the signal")            # the open connection still relays
    assert recv_exact(s, 16) == b"after the signal"
    s.shutdown(socket.SHUT_WR)
    assert recv_all(s) == b""
    assert fwd.wait_exit(5) == 0
    assert time.monotonic() - t0 < 5.0, "should exit when the last connection ends"
    cl = fwd.wait_close(hs["conn"], 1)
    assert cl["reason"] == "done", cl
    fwd.wait_event("exit", 1)
    assert len(fwd.find("handshake")) == 1


def test_shutdown_timeout_closes_lingering_connection(ssl_upstream, service, start_tlsfwd,
                                                      client):
    up = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service(up.port)}, {"shutdown_timeout": "500ms"})
    s = client(fwd)
    s.sendall(b"x")
    assert recv_exact(s, 1) == b"x"
    hs = fwd.conn_of(s)
    t0 = time.monotonic()
    fwd.signal(signal.SIGTERM)
    data, _ = recv_closed(s)
    closed = time.monotonic() - t0
    assert data == b""
    assert closed >= 0.45, "closed before shutdown_timeout (%.2fs)" % closed
    rc = fwd.wait_exit(5)
    exited = time.monotonic() - t0
    assert rc == 0
    assert exited < 3.0, "shutdown_timeout=500ms but exit after %.2fs" % exited
    cl = fwd.wait_close(hs["conn"], 1)
    assert cl["reason"] == "shutdown", cl
    assert cl["level"] == "warn", cl
    fwd.wait_event("exit", 1)


def test_shutdown_during_a_handshake_still_logs_its_handshake_line(cleanup, service,
                                                                  start_tlsfwd, client):
    """A set-up the drain cuts short gets its one handshake line (result=fail,
    the stage it was in, the reason), then its close line (reason=shutdown)."""
    silent = SilentHolder()
    cleanup.append(silent)
    fwd = start_tlsfwd({"svc": service(silent.port, handshake_timeout="30s")},
                       {"shutdown_timeout": "300ms"})
    s = client(fwd)
    deadline = time.monotonic() + 10
    while not silent.conns:             # tlsfwd's TCP connection is in: handshaking
        assert time.monotonic() < deadline
        time.sleep(0.02)
    fwd.signal(signal.SIGTERM)
    assert fwd.wait_exit(5) == 0
    hs = fwd.conn_of(s)
    assert (hs["result"], hs["stage"]) == ("fail", "handshake"), hs
    assert "shutting down" in hs["error"], hs
    assert fwd.wait_close(hs["conn"], 1)["reason"] == "shutdown"


def test_second_sigterm_closes_everything_now(ssl_upstream, service, start_tlsfwd, client):
    up = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service(up.port)}, {"shutdown_timeout": "30s"})
    s = client(fwd)
    s.sendall(b"x")
    assert recv_exact(s, 1) == b"x"
    hs = fwd.conn_of(s)
    fwd.signal(signal.SIGTERM)
    fwd.wait_event("drain", 5)
    t0 = time.monotonic()
    fwd.signal(signal.SIGTERM)
    data, _ = recv_closed(s)
    assert data == b""
    assert fwd.wait_exit(5) == 0
    assert time.monotonic() - t0 < 3.0
    cl = fwd.wait_close(hs["conn"], 1)
    assert cl["reason"] == "shutdown", cl
    fwd.wait_event("exit", 1)


def test_sighup_reload_keeps_serving(ssl_upstream, service, start_tlsfwd, client):
    """SIGHUP reloads the same config: open connections and the listener stay."""
    up = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service(up.port)})
    s = client(fwd)
    s.sendall(b"1")
    assert recv_exact(s, 1) == b"1"
    fwd.signal(signal.SIGHUP)
    rl = fwd.wait_event("reload", 5)
    assert rl["result"] == "ok", rl
    s.sendall(b"2")
    assert recv_exact(s, 1) == b"2"
    s2 = client(fwd)                           # still accepting
    s2.sendall(b"3")
    assert recv_exact(s2, 1) == b"3"
    assert fwd.proc.poll() is None
    assert not fwd.find("drain") and not fwd.find("exit")
