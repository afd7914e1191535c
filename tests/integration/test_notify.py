"""sd_notify: READY=1 once the listeners accept, STATUS= updates (at most one a
second, only on change), RELOADING=1/READY=1 around SIGHUP, STOPPING=1 on
SIGTERM, and WATCHDOG=1 keep-alives when WATCHDOG_USEC asks for them."""

import re
import signal
import socket
import time

import pytest

from harness.clients import connect, echo_once, recv_all, recv_closed, recv_exact
from harness.daemon import wait_count
from harness.procfs import listening_sockets
from harness.systemd import with_watchdog_pid
from harness.upstreams import closed_port, refusing_port, echo_handler

STATUS_RE = re.compile(r"^(\d+) services?, (\d+) active connections?, (\d+) handshakes?, "
                       r"(\d+) failed$")
FAILED_RELOAD_RE = re.compile(r"^reload failed \((\d+) errors?\), running the previous "
                              r"configuration; (.*)$")


def counts(status):
    """STATUS text -> (services, active, handshakes, failed); asserts the format."""
    m = STATUS_RE.match(status)
    assert m, "STATUS does not match %s: %r" % (STATUS_RE.pattern, status)
    return tuple(int(x) for x in m.groups())


def test_ready_only_when_listeners_accept(ssl_upstream, service, notify, start_tlsfwd):
    up = ssl_upstream(echo_handler)
    n = notify()
    fixed = closed_port()     # known before start, so we can connect the instant READY arrives
    fwd = start_tlsfwd({"a": service(up.port, listen="127.0.0.1:%d" % fixed),
                        "b": service(up.port)},
                       ready=False, env={"NOTIFY_SOCKET": n.path})
    i, _t, ready = n.wait_key("READY", "1", timeout=10)
    # Right at READY: the listener must already accept.
    try:
        c = connect(fixed, 2)
    except OSError as e:
        pytest.fail("connect to the listen port right at READY=1 failed: %r" % e)
    fwd.clients.append(c)
    held = listening_sockets(fwd.pid)
    assert fixed in held, "READY=1 sent but tlsfwd holds no listener on %d: %r" % (fixed, held)

    assert not any("READY" in m for m in n.parsed()[:i]), "READY before " + n.dump()
    assert n.msgs[i][3] == fwd.pid, "READY=1 not sent by the tlsfwd process (pid %s, want %d)" % (
        n.msgs[i][3], fwd.pid)
    assert "STATUS" in ready, "READY=1 without STATUS=: %r" % ready
    assert counts(ready["STATUS"]) == (2, 0, 0, 0), ready

    fwd.wait_ready(5)                         # event=listening lines for both services
    assert fwd.ports["a"] == fixed
    assert fwd.ports["b"] in held, "READY=1 before service b listened: %r" % held
    c.sendall(b"hello")
    assert recv_exact(c, 5) == b"hello"
    echo_once(fwd.ports["b"])


def test_status_counts_rate_limited_and_only_on_change(ssl_upstream, service, notify,
                                                        start_tlsfwd):
    up = ssl_upstream(echo_handler)
    n = notify()
    fwd = start_tlsfwd({"good": service(up.port), "bad": service(refusing_port())},
                       ready=False, env={"NOTIFY_SOCKET": n.path})
    ri, _t, ready = n.wait_key("READY", "1", timeout=10)
    fwd.wait_ready(5)
    assert counts(ready["STATUS"]) == (2, 0, 0, 0)

    # One long-lived connection: 1 active, 1 handshake.
    s = connect(fwd.ports["good"])
    fwd.clients.append(s)
    s.sendall(b"x")
    assert recv_exact(s, 1) == b"x"
    n.wait(lambda m: "STATUS" in m and counts(m["STATUS"]) == (2, 1, 1, 0), 4, ri + 1,
           "STATUS 2 services, 1 active connection, 1 handshake, 0 failed")

    echo_once(fwd.ports["good"])
    echo_once(fwd.ports["good"])
    b = connect(fwd.ports["bad"])           # upstream refuses: a failed handshake
    fwd.clients.append(b)
    data, _how = recv_closed(b)
    assert data == b""
    fwd.wait_event("handshake", 5, service="bad", result="fail")
    s.shutdown(socket.SHUT_WR)
    assert recv_all(s) == b""
    wait_count(fwd, "close", 4, timeout=5)
    _i, t_final, final = n.wait(
        lambda m: "STATUS" in m and counts(m["STATUS"]) == (2, 0, 3, 1), 3.5, ri + 1,
        "STATUS 2 services, 0 active connections, 3 handshakes, 1 failed")

    time.sleep(1.3)                           # proving that nothing more is sent
    msgs = n.msgs[ri:]
    statuses = [(t, m["STATUS"]) for t, m, _r, _p in msgs if m and "STATUS" in m]
    assert statuses[-1][1] == final["STATUS"], (
        "STATUS sent again without a change:\n" + n.dump())
    for (t1, s1), (t2, s2) in zip(statuses, statuses[1:]):
        assert s1 != s2, "STATUS %r sent twice in a row (no change)\n%s" % (s1, n.dump())
    # The rate limit, on the plain updates (READY=1 carries a STATUS too, forced).
    updates = [t for t, m, _r, _p in msgs if m and "STATUS" in m and "READY" not in m]
    assert len(updates) >= 2, n.dump()
    for t1, t2 in zip(updates, updates[1:]):
        assert t2 - t1 >= 0.8, "two STATUS updates %.3fs apart (at most one a second):\n%s" % (
            t2 - t1, n.dump())
    assert not [m for m in n.parsed() if "WATCHDOG" in m], (
        "WATCHDOG=1 sent without WATCHDOG_USEC:\n" + n.dump())


def mono_us():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def test_reload_notifications(ssl_upstream, service, notify, start_tlsfwd):
    up = ssl_upstream(echo_handler)
    n = notify()
    svc = service(up.port)
    fwd = start_tlsfwd({"svc": svc}, env={"NOTIFY_SOCKET": n.path})
    n.wait_key("READY", "1", timeout=5)

    # A good reload: RELOADING=1 with MONOTONIC_USEC, then READY=1 with the usual STATUS.
    mark = n.mark()
    before = mono_us()
    _li, rec = fwd.reload()
    assert rec.get("result") == "ok", rec
    ri, _t, rl = n.wait_key("RELOADING", "1", timeout=5, start=mark)
    after = mono_us()
    assert "MONOTONIC_USEC" in rl, "RELOADING=1 without MONOTONIC_USEC: %r" % rl
    usec = int(rl["MONOTONIC_USEC"])
    assert before - 2_000_000 <= usec <= after + 2_000_000, (
        "MONOTONIC_USEC=%d is not CLOCK_MONOTONIC in µs (now %d..%d)" % (usec, before, after))
    assert rl.get("READY") != "1", "RELOADING=1 and READY=1 in one datagram: %r" % rl
    _ri2, _t2, rd = n.wait_key("READY", "1", timeout=5, start=ri + 1)
    assert counts(rd.get("STATUS", "")) == (1, 0, 0, 0), rd

    # A failed reload: the old configuration keeps serving, STATUS says so.
    fwd.write_config({"svc": dict(svc, verify="maybe", connect_timeout="5x")})
    mark = n.mark()
    _li, rec = fwd.reload()
    assert rec.get("result") == "fail", rec
    assert str(rec.get("errors")) == "2", rec
    ri, _t, rl = n.wait_key("RELOADING", "1", timeout=5, start=mark)
    assert "MONOTONIC_USEC" in rl
    _i, _t, rd = n.wait_key("READY", "1", timeout=5, start=ri + 1)
    m = FAILED_RELOAD_RE.match(rd.get("STATUS", ""))
    assert m, "after a failed reload, STATUS should match %r: %r" % (FAILED_RELOAD_RE.pattern, rd)
    assert int(m.group(1)) == 2, rd
    assert counts(m.group(2)) == (1, 0, 0, 0), rd
    echo_once(fwd.ports["svc"])


def test_stopping_on_sigterm(ssl_upstream, service, notify, start_tlsfwd):
    up = ssl_upstream(echo_handler)
    n = notify()
    fwd = start_tlsfwd({"svc": service(up.port)}, env={"NOTIFY_SOCKET": n.path})
    n.wait_key("READY", "1", timeout=5)
    mark = n.mark()
    fwd.signal(signal.SIGTERM)
    n.wait_key("STOPPING", "1", timeout=5, start=mark)
    assert fwd.wait_exit(5) == 0


@pytest.mark.parametrize("how", ["no_watchdog_pid", "own_watchdog_pid"])
def test_watchdog_keepalives(how, ssl_upstream, service, notify, start_tlsfwd):
    up = ssl_upstream(echo_handler)
    n = notify()
    fwd = start_tlsfwd({"svc": service(up.port)},
                       env={"NOTIFY_SOCKET": n.path, "WATCHDOG_USEC": "200000"},
                       argv=with_watchdog_pid if how == "own_watchdog_pid" else None)
    ri, t_ready, _ = n.wait_key("READY", "1", timeout=5)
    deadline = t_ready + 1.5
    j = ri
    for k in range(5):
        left = deadline - time.monotonic()
        try:
            j, _t, _m = n.wait_key("WATCHDOG", "1", timeout=max(left, 0.01), start=j + 1)
        except AssertionError:
            pytest.fail("only %d WATCHDOG=1 within 1.5s of READY with WATCHDOG_USEC=200000:\n%s"
                        % (k, n.dump(30)))
    time.sleep(max(0.0, deadline - time.monotonic()))
    got = [t for t, m, _r, _p in n.msgs[ri + 1:] if m and m.get("WATCHDOG") == "1"
           and t <= deadline]
    assert len(got) <= 40, "%d WATCHDOG=1 in 1.5s: far more often than every ~100ms" % len(got)
    echo_once(fwd.ports["svc"])


def test_no_watchdog_for_another_pid(ssl_upstream, service, notify, start_tlsfwd):
    """WATCHDOG_PID names another process: the watchdog is not ours (sd_watchdog_enabled)."""
    up = ssl_upstream(echo_handler)
    n = notify()
    start_tlsfwd({"svc": service(up.port)},
                 env={"NOTIFY_SOCKET": n.path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"})
    n.wait_key("READY", "1", timeout=5)
    time.sleep(0.8)                           # proving that nothing is sent
    assert not [m for m in n.parsed() if "WATCHDOG" in m], n.dump()
