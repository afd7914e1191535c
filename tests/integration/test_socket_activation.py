"""Socket activation: listeners passed by the service manager (LISTEN_FDS,
LISTEN_PID, LISTEN_FDNAMES) replace the configured `listen` of the service they
are named after; names that match no service are an error; fds meant for
another pid are ignored."""

import os
import socket

import pytest

from harness.clients import echo_once
from harness.config import render_ini
from harness.daemon import run_tlsfwd
from harness.procfs import listening_sockets
from harness.systemd import fds_at_3, with_listen_pid
from harness.upstreams import refusing_port, echo_handler


def tcp_listener():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    return s


def test_inherited_listener_is_served_and_others_bind(ssl_upstream, service, start_tlsfwd):
    up = ssl_upstream(echo_handler)
    ls = tcp_listener()
    port = ls.getsockname()[1]
    inode = os.fstat(ls.fileno()).st_ino
    try:
        fwd = start_tlsfwd({"svc": service(up.port, listen="127.0.0.1:0"),
                            "other": service(up.port)},
                           env={"LISTEN_FDS": "1", "LISTEN_FDNAMES": "svc"},
                           argv=with_listen_pid, listen_fds=[ls.fileno()])
    finally:
        ls.close()                              # tlsfwd has its own copy now

    lines = fwd.find("listening", service="svc")
    assert len(lines) == 1, lines
    assert lines[0]["listen"] == "127.0.0.1:%d" % port, lines[0]
    assert lines[0].get("inherited") == "yes", lines[0]
    other = fwd.find("listening", service="other")
    assert len(other) == 1 and other[0].get("inherited") != "yes", other
    assert fwd.ports["other"] != port

    held = listening_sockets(fwd.pid)
    assert held.get(port) == inode, "the inherited socket (inode %d) is not what tlsfwd " \
        "listens on: %r" % (inode, held)
    assert set(held) == {port, fwd.ports["other"]}, (
        "tlsfwd should listen on exactly the inherited socket and other's own: %r" % held)

    echo_once(port)
    echo_once(fwd.ports["other"])
    assert len(fwd.find("handshake", service="svc", result="ok")) == 1


def test_two_inherited_listeners(ssl_upstream, service, start_tlsfwd):
    up = ssl_upstream(echo_handler)
    la, lb = tcp_listener(), tcp_listener()
    pa, pb = la.getsockname()[1], lb.getsockname()[1]
    try:
        fwd = start_tlsfwd({"a": service(up.port), "b": service(up.port)},
                           env={"LISTEN_FDS": "2", "LISTEN_FDNAMES": "b:a"},
                           argv=with_listen_pid, listen_fds=[lb.fileno(), la.fileno()])
    finally:
        la.close()
        lb.close()
    assert fwd.ports == {"a": pa, "b": pb}, fwd.log_text()
    assert all(r.get("inherited") == "yes" for r in fwd.find("listening")), fwd.log_text()
    assert set(listening_sockets(fwd.pid)) == {pa, pb}
    echo_once(pa)
    echo_once(pb)
    assert len(fwd.find("handshake", service="a", result="ok")) == 1
    assert len(fwd.find("handshake", service="b", result="ok")) == 1


BAD = {
    # id: (LISTEN_FDS, LISTEN_FDNAMES, number of fds, word stderr must contain)
    "unknown_name": ("1", "nosuch", 1, "nosuch"),
    "second_name_unknown": ("2", "svc:nosuch", 2, "nosuch"),
    "fewer_names_than_fds": ("2", "svc", 2, None),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_unusable_inherited_fds_fail_start(case, tlsfwd_bin, pki, service, tmp_path):
    nfds, names, count, word = BAD[case]
    cfg = tmp_path / "sa.ini"
    cfg.write_text(render_ini({"log_level": "info"}, {"svc": service(refusing_port())}))
    socks = [tcp_listener() for _ in range(count)]
    try:
        r = run_tlsfwd(tlsfwd_bin, ["-c", str(cfg)], timeout=10,
                         env={"LISTEN_FDS": nfds, "LISTEN_FDNAMES": names},
                         argv=with_listen_pid, preexec_fn=fds_at_3([s.fileno() for s in socks]),
                         pass_fds=range(3, 3 + count))
    finally:
        for s in socks:
            s.close()
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 1, "rc=%d, want 1; stderr:\n%s" % (r.returncode, err)
    assert "event=ready" not in err, err
    assert err.strip(), "no message on stderr"
    if word:
        assert word in err, "stderr should name %r:\n%s" % (word, err)


def test_fds_for_another_pid_are_ignored(ssl_upstream, service, start_tlsfwd):
    up = ssl_upstream(echo_handler)
    ls = tcp_listener()
    port = ls.getsockname()[1]
    try:
        fwd = start_tlsfwd({"svc": service(up.port)},
                           env={"LISTEN_FDS": "1", "LISTEN_FDNAMES": "svc", "LISTEN_PID": "1"},
                           listen_fds=[ls.fileno()])
    finally:
        ls.close()
    lines = fwd.find("listening", service="svc")
    assert len(lines) == 1, lines
    assert lines[0].get("inherited") != "yes", lines[0]
    assert fwd.ports["svc"] != port, "used an fd passed for another pid"
    echo_once(fwd.ports["svc"])
