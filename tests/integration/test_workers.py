"""[global] workers = N: N event loops, one thread each, on the same sockets."""

import os
import signal
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness.clients import connect, connect_unix, echo_once, recv_all, recv_exact
from harness.daemon import check_config, wait_count
from harness.data import det_bytes
from harness.logfmt import num
from harness.upstreams import echo_handler

WORKERS = {"workers": "2"}


def threads_of(pid):
    return len(os.listdir("/proc/%d/task" % pid))


def test_two_loops_share_the_load(ssl_upstream, service, start_tlsfwd):
    n = 200
    up = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service("localhost:%d" % up.port)}, WORKERS)
    assert fwd.find("workers")[0]["loops"] == "2"
    assert threads_of(fwd.pid) == 2
    port = fwd.ports["svc"]
    barrier = threading.Barrier(n, timeout=60)

    def one(i):
        s = connect(port, timeout=60)
        try:
            msg = det_bytes("w-%d" % i, 1000 + 13 * i)
            s.sendall(msg)
            echoed = recv_exact(s, len(msg))
            barrier.wait()                 # all relays open at once, on both loops
            s.shutdown(socket.SHUT_WR)
            return echoed == msg and recv_all(s) == b""
        finally:
            s.close()

    with ThreadPoolExecutor(n) as ex:
        results = list(ex.map(one, range(n)))
    assert all(results)
    closes = wait_count(fwd, "close", n, timeout=30)
    hss = fwd.find("handshake")
    ids = [int(h["conn"]) for h in hss]
    assert len(set(ids)) == n, "conn ids must be unique across loops"
    # ids are interleaved by loop: loop k numbers k, k+2, k+4, ...
    assert {i % 2 for i in ids} == {0, 1}, "one loop served everything: %r" % ids[:20]
    assert all(c["reason"] == "done" for c in closes)


def test_status_counts_every_loop(ssl_upstream, service, notify, start_tlsfwd):
    """STATUS= sums the counts of both loops."""
    up = ssl_upstream(echo_handler)
    n = notify()
    fwd = start_tlsfwd({"svc": service(up.port)}, WORKERS, env={"NOTIFY_SOCKET": n.path})
    for _ in range(20):
        echo_once(fwd.ports["svc"])
    wait_count(fwd, "close", 20, timeout=10)
    assert {int(h["conn"]) % 2 for h in fwd.find("handshake")} == {0, 1}, \
        "this test needs both loops to have served"
    n.wait(lambda m: m.get("STATUS") == "1 service, 0 active connections, 20 handshakes, "
           "0 failed", 4, 0, "STATUS with the sum of both loops")


def test_reload_reaches_every_loop(ssl_upstream, service, start_tlsfwd, pki, tmp_path):
    """Both loops take the new configuration: after the CA is swapped and
    SIGHUP sent, every new connection (on either loop) verifies against it."""
    import shutil
    up = ssl_upstream(echo_handler)
    ca = tmp_path / "swapped-ca.pem"
    shutil.copyfile(pki["other_ca"], ca)
    fwd = start_tlsfwd({"svc": service(up.port, ca_file=str(ca))}, WORKERS)
    shutil.copyfile(pki["ca"], ca)
    _, rec = fwd.reload()
    assert rec["result"] == "ok", rec
    for _ in range(20):
        echo_once(fwd.ports["svc"])
    hss = fwd.find("handshake")
    assert len(hss) == 20 and all(h["result"] == "ok" for h in hss), hss
    assert {int(h["conn"]) % 2 for h in hss} <= {0, 1}


def listening_inodes(pid, port):
    """The inodes of the listening TCP sockets on port that pid holds open."""
    fds = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            fds.add(int(link[8:-1]))
    with open("/proc/net/tcp") as f:
        rows = [r.split() for r in f.read().splitlines()[1:]]
    return sorted(int(r[9]) for r in rows
                  if r[3] == "0A" and int(r[1].rsplit(":", 1)[1], 16) == port
                  and int(r[9]) in fds)


def test_each_loop_has_its_own_reuseport_socket(ssl_upstream, service, start_tlsfwd,
                                                 short_dir):
    """workers = 3: three SO_REUSEPORT sockets on the port (the kernel spreads
    clients over the loops' own queues), kept as they are by a reload; a unix
    listener stays one socket that the loops share."""
    up = ssl_upstream(echo_handler)
    d = short_dir()
    svc = service(up.port)
    uni = service(up.port, listen="unix:%s/w.sock" % d)
    fwd = start_tlsfwd({"svc": svc, "uni": uni}, {"workers": "3"})
    port = fwd.ports["svc"]
    before = listening_inodes(fwd.pid, port)
    assert len(before) == 3, before
    for _ in range(30):
        echo_once(port)
    loops = {int(h["conn"]) % 3 for h in fwd.find("handshake")}
    assert len(loops) >= 2, "every connection went to one loop: %r" % loops
    fwd.write_config({"svc": dict(svc, idle_timeout="31s"), "uni": uni}, {"workers": "3"})
    _, rec = fwd.reload()
    assert rec["result"] == "ok", rec
    assert listening_inodes(fwd.pid, port) == before, "a reload replaced the sockets"
    echo_once(port)
    s = connect_unix("%s/w.sock" % d)
    fwd.clients.append(s)
    s.sendall(b"u")
    assert recv_exact(s, 1) == b"u"


def test_changing_workers_needs_a_restart(ssl_upstream, service, start_tlsfwd):
    up = ssl_upstream(echo_handler)
    svc = service(up.port)
    fwd = start_tlsfwd({"svc": svc}, WORKERS)
    fwd.write_config({"svc": svc}, {"workers": "1"})
    _, rec = fwd.reload()
    assert rec["result"] == "fail", rec
    assert any("workers" in r.get("error", "") and "restart" in r.get("error", "")
               for r in fwd.find("config")), fwd.log_text(10)
    echo_once(fwd.ports["svc"])
    assert threads_of(fwd.pid) == 2


def test_sigterm_drains_every_loop(ssl_upstream, service, start_tlsfwd):
    """Connections open on both loops still relay after SIGTERM; exit 0 once
    they are closed."""
    up = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service(up.port)}, dict(WORKERS, shutdown_timeout="20s"))
    socks = []
    for i in range(20):                       # enough that both loops hold some
        s = connect(fwd.ports["svc"], 10)
        s.sendall(b"x")
        assert recv_exact(s, 1) == b"x"
        socks.append(s)
    wait_count(fwd, "handshake", 20, timeout=10)
    assert {int(h["conn"]) % 2 for h in fwd.find("handshake")} == {0, 1}
    fwd.signal(signal.SIGTERM)
    fwd.wait_event("drain", 5)
    for s in socks:
        s.sendall(b"y")
        assert recv_exact(s, 1) == b"y"
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b""
        s.close()
    assert fwd.wait_exit(10) == 0
    closes = fwd.find("close")
    assert len(closes) == 20 and all(c["reason"] == "done" for c in closes), closes
    assert all(num(c["bytes_up"]) == 2 for c in closes)


@pytest.mark.parametrize("value,ok", [("1", True), ("2", True), ("auto", True),
                                      ("64", True), ("0", False), ("65", False),
                                      ("two", False), ("-1", False), ("", False)])
def test_workers_values(value, ok, tlsfwd_bin, tmp_path, pki):
    cfg = tmp_path / "w.ini"
    cfg.write_text("[global]\nworkers = %s\n[s]\nlisten = 127.0.0.1:0\n"
                   "upstream = localhost:443\nca_file = %s\n" % (value, pki["ca"]))
    rc, errs, text = check_config(tlsfwd_bin, cfg)
    if ok:
        assert rc == 0, text
    else:
        assert rc == 1, text
        assert any(line == 2 and "workers" in msg for _, line, msg in errs), text
