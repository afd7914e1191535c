"""Who may connect, and how many: allow/deny, max_connections, unix socket
permissions, and key files others can read."""

import grp
import os
import pwd
import shutil
import socket
import stat
import subprocess
import time

import pytest

from harness.clients import connect, connect_unix, recv_closed, recv_exact
from harness.config import ini_line, render_ini
from harness.daemon import run_tlsfwd
from harness.logfmt import num
from harness.upstreams import refusing_port, echo_handler
from harness.wrapper import SOCK_TIMEOUT


def connect_from(port, source, timeout=SOCK_TIMEOUT):
    """A client socket to 127.0.0.1:port bound to the loopback address source."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def assert_closed_at_once(s):
    """tlsfwd closed the client without relaying anything."""
    data, _how = recv_closed(s)
    assert data == b"", data
    s.close()


def refused_lines(fwd, **fields):
    return fwd.find("refused", **fields)


def test_deny_wins_and_allow_limits(ssl_upstream, service, start_tlsfwd):
    """allow = 127.0.0.0/8 but deny = 127.0.0.3: .3 is refused at accept (no
    upstream connection, no handshake line), .2 gets through."""
    up = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service(up.port, allow="127.0.0.0/8",
                                       deny="127.0.0.3, 10.0.0.0/8")})
    bad = connect_from(fwd.ports["svc"], "127.0.0.3")
    bad_addr = "127.0.0.3:%d" % bad.getsockname()[1]
    assert_closed_at_once(bad)
    line = fwd.wait_event("refused", service="svc")
    assert line["reason"] == "denied" and line["client"] == bad_addr, line
    assert line["level"] == "warn", line
    good = connect_from(fwd.ports["svc"], "127.0.0.2")
    good.sendall(b"hello")
    assert recv_exact(good, 5) == b"hello"
    hs = fwd.conn_of(good)
    assert hs["result"] == "ok", hs
    good.close()
    fwd.wait_close(hs["conn"])
    assert up.accepted == 1, "the refused client reached the upstream"
    assert not fwd.find("handshake", client=bad_addr)


def test_allow_list_refuses_the_rest(ssl_upstream, service, start_tlsfwd):
    up = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service(up.port, allow="127.0.0.2/32, ::1")})
    assert_closed_at_once(connect_from(fwd.ports["svc"], "127.0.0.1"))
    assert fwd.wait_event("refused", service="svc")["reason"] == "denied"
    ok = connect_from(fwd.ports["svc"], "127.0.0.2")
    ok.sendall(b"x")
    assert recv_exact(ok, 1) == b"x"
    ok.close()


def test_refusals_are_rate_limited(ssl_upstream, service, start_tlsfwd):
    """A burst of refused clients gives one line; the next line, a second
    later, counts the ones left out."""
    up = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service(up.port, deny="127.0.0.0/8")})
    for _ in range(20):
        assert_closed_at_once(connect(fwd.ports["svc"]))
    # Every one was closed by tlsfwd, so every one was judged; the line is
    # written before the close, but read by the log reader thread after it.
    fwd.wait_event("refused", service="svc")
    first = refused_lines(fwd, service="svc")
    assert len(first) == 1, first
    assert "suppressed" not in first[0], first
    start = fwd.mark()
    deadline = time.monotonic() + 10
    while True:     # the window is a time span: retry until it has passed
        assert_closed_at_once(connect(fwd.ports["svc"]))
        later = refused_lines(fwd, service="svc")
        if len(later) > 1 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(later) == 2, later
    assert num(later[1]["suppressed"]) >= 19, later[1]
    assert fwd.mark() > start


def test_public_listen_needs_allow(check_ini, service):
    rc, errors, text, path = check_ini({"svc": service(443, listen="0.0.0.0:0")})
    assert rc == 1
    assert any(e[0] == path and e[1] == ini_line(text, "svc", "listen")
               and "allow" in e[2] for e in errors), errors
    rc, errors, _text, _path = check_ini(
        {"svc": service(443, listen="0.0.0.0:0", allow="127.0.0.1")})
    assert rc == 0, errors


def test_allow_everyone_is_warned(ssl_upstream, service, start_tlsfwd, client):
    up = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service(up.port, listen="0.0.0.0:0",
                                       allow="0.0.0.0/0, ::/0")})
    warns = [r for r in fwd.find("config", service="svc") if "every client" in r.get("msg", "")]
    assert warns and warns[0]["level"] == "warn", fwd.log_text()
    s = client(fwd)
    s.sendall(b"ok")
    assert recv_exact(s, 2) == b"ok"


def hold(fwd, port, n):
    """n relaying connections through port (echo checked), kept open."""
    socks = []
    for i in range(n):
        s = connect(port)
        fwd.clients.append(s)
        s.sendall(b"%d" % i)
        assert recv_exact(s, len(b"%d" % i)) == b"%d" % i
        socks.append(s)
    return socks


@pytest.mark.parametrize("workers", [1, 2])
def test_max_connections_per_service(workers, ssl_upstream, service, start_tlsfwd):
    """The limit holds over every worker loop; a freed slot admits again."""
    up = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service(up.port, max_connections="3")},
                       {"workers": str(workers)})
    port = fwd.ports["svc"]
    held = hold(fwd, port, 3)
    extra = connect(port)
    assert_closed_at_once(extra)
    line = fwd.wait_event("refused", service="svc")
    assert line["reason"] == "max_connections" and num(line["limit"]) == 3, line
    assert up.accepted == 3
    conn = fwd.conn_of(held[0])["conn"]
    held[0].close()
    fwd.wait_close(conn)
    hold(fwd, port, 1)      # the freed slot


def test_global_max_connections(ssl_upstream, service, start_tlsfwd):
    up = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"a": service(up.port), "b": service(up.port)},
                       {"max_connections": "3"})
    hold(fwd, fwd.ports["a"], 2)
    hold(fwd, fwd.ports["b"], 1)
    assert_closed_at_once(connect(fwd.ports["a"]))
    line = fwd.wait_event("refused", service="a")
    assert line["reason"] == "global_max_connections", line
    assert num(line["limit"]) == 3, line


def test_max_connections_survives_reload(ssl_upstream, service, start_tlsfwd):
    """Open connections count against the limit of the new configuration."""
    up = ssl_upstream(echo_handler)
    svc = service(up.port, max_connections="2")
    fwd = start_tlsfwd({"svc": svc})
    held = hold(fwd, fwd.ports["svc"], 2)
    svc["idle_timeout"] = "31s"             # same listen: the socket is kept
    fwd.write_config({"svc": svc})
    _start, rec = fwd.reload()
    assert rec["result"] == "ok", rec
    assert_closed_at_once(connect(fwd.ports["svc"]))
    assert fwd.wait_event("refused", service="svc")["reason"] == "max_connections"
    for s in held:      # the old generation's connections still relay
        s.sendall(b"z")
        assert recv_exact(s, 1) == b"z"


def test_unix_socket_mode_owner_group(ssl_upstream, service, start_tlsfwd, short_dir):
    up = ssl_upstream(echo_handler)
    d = short_dir()
    nobody = pwd.getpwnam("nobody")
    group = grp.getgrgid(nobody.pw_gid)
    fwd = start_tlsfwd({
        "tight": service(up.port, listen="unix:%s/t.sock" % d, mode="0600",
                         owner="nobody", group=group.gr_name),
        "plain": service(up.port, listen="unix:%s/p.sock" % d),
    })
    st = os.stat("%s/t.sock" % d)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid)
    assert stat.S_IMODE(os.stat("%s/p.sock" % d).st_mode) == 0o660
    s = connect_unix("%s/t.sock" % d)
    fwd.clients.append(s)
    s.sendall(b"unix")
    assert recv_exact(s, 4) == b"unix"


def test_unix_socket_mode_enforced(ssl_upstream, service, start_tlsfwd, short_dir):
    """A user the mode leaves out cannot connect (run as nobody, not root)."""
    up = ssl_upstream(echo_handler)
    d = short_dir()
    path = "%s/m.sock" % d
    start_tlsfwd({"svc": service(up.port, listen="unix:" + path, mode="0600")})
    nobody = pwd.getpwnam("nobody")
    probe = ("import socket,sys\ns=socket.socket(socket.AF_UNIX)\n"
             "try:\n s.connect(sys.argv[1])\nexcept PermissionError:\n sys.exit(3)\n")
    rc = subprocess.run(["/usr/bin/python3", "-c", probe, path],
                          preexec_fn=lambda: (os.setgid(nobody.pw_gid), os.setuid(nobody.pw_uid)),
                          timeout=10).returncode
    assert rc == 3, "a user outside mode 0600 could connect (rc=%d)" % rc


def test_stale_unix_socket_is_replaced(ssl_upstream, service, start_tlsfwd, short_dir):
    """A socket file left by a crashed run (nothing listens on it) is removed
    and the service listens in its place."""
    up = ssl_upstream(echo_handler)
    path = "%s/stale.sock" % short_dir()
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)
    dead.listen(1)
    dead.close()                        # the file stays: what a crash leaves
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    fwd = start_tlsfwd({"svc": service(up.port, listen="unix:" + path)})
    s = connect_unix(path)
    fwd.clients.append(s)
    s.sendall(b"fresh")
    assert recv_exact(s, 5) == b"fresh"


@pytest.mark.parametrize("occupant", ["live_socket", "regular_file"])
def test_occupied_unix_path_is_an_error(occupant, service, tlsfwd_bin, short_dir, tmp_path):
    """Something listening on the path, or a file that is not a socket: tlsfwd
    refuses to start, names the path, and leaves the occupant alone."""
    path = "%s/busy.sock" % short_dir()
    live = None
    if occupant == "live_socket":
        live = socket.socket(socket.AF_UNIX)
        live.bind(path)
        live.listen(4)
        want = "%s is in use by a running process" % path
    else:
        with open(path, "w") as f:
            f.write("not a socket\n")
        want = "%s exists and is not a socket" % path
    try:
        ini = tmp_path / "occupied.ini"
        ini.write_text(render_ini({"log_format": "logfmt"},
                                    {"svc": service(refusing_port(), listen="unix:" + path)}))
        r = run_tlsfwd(tlsfwd_bin, ["-c", str(ini)])
        err = r.stderr.decode(errors="replace")
        assert r.returncode == 1, err
        assert want in err, err
        assert "event=ready" not in err
        if live is not None:            # still the occupant's socket, still answering
            live.setblocking(False)
            try:
                while True:             # tlsfwd's own probe, already closed
                    live.accept()[0].close()
            except BlockingIOError:
                pass
            live.setblocking(True)
            live.settimeout(10)
            probe = connect_unix(path)
            conn, _ = live.accept()
            probe.sendall(b"x")
            assert conn.recv(1) == b"x"
            probe.close()
            conn.close()
        else:
            with open(path) as f:
                assert f.read() == "not a socket\n"
    finally:
        if live is not None:
            live.close()


def test_key_readable_by_others_is_refused(pki, service, check_ini, start_tlsfwd, tmp_path):
    key = tmp_path / "open.key"
    shutil.copyfile(pki["client_key"], key)
    os.chmod(key, 0o644)
    svc = service("localhost:443", cert_file=pki["client"], key_file=str(key))
    rc, errors, text, path = check_ini({"svc": svc})
    assert rc == 1
    assert any(e[0] == path and e[1] == ini_line(text, "svc", "key_file")
               and "readable by others" in e[2] and "0644" in e[2] for e in errors), errors
    svc["allow_insecure_key_perms"] = "yes"
    fwd = start_tlsfwd({"svc": svc})
    warns = [r for r in fwd.find("config", service="svc")
             if "allow_insecure_key_perms" in r.get("msg", "")]
    assert warns and warns[0]["level"] == "warn", fwd.log_text()
