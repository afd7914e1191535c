"""Journal: with JOURNAL_STREAM naming its stderr, tlsfwd sends each record to
journald's native socket (MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, TLSFWD_<KEY>)
instead of writing it to stderr, and falls back to stderr when the socket is
unreachable.

No journald runs here: the test binds its own datagram socket and shows it to
tlsfwd as /run/systemd/journal/socket through a bind mount in a private mount
namespace (`unshare --mount`); without namespaces, it binds that path directly
when the machine has no journal socket there."""

import os
import signal
import socket
import subprocess

import pytest

from harness.clients import connect, echo_once, recv_closed
from harness.logfmt import parse_logfmt
from harness.systemd import JournalSocket
from harness.upstreams import refusing_port, echo_handler

PRIORITY = {"error": "3", "warn": "4", "info": "6", "debug": "7"}
JOURNAL_DIR = "/run/systemd/journal"
JOURNAL_SOCKET = JOURNAL_DIR + "/socket"


def _unshare_works():
    try:
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                            "mount -t tmpfs tmpfs /mnt"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
        return r.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


_UNSHARE = []


def stale_socket(path):
    """A socket file nobody listens on (connecting gives ECONNREFUSED)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.close()


class FakeJournal:
    """sock: the JournalSocket (None without socket); argv: the command wrapper.
    kind: "live" (a JournalSocket), "stale" (a dead socket file) or "none"."""

    def __init__(self, short_dir, kind="live"):
        self.sock = None
        self._created = []
        if not _UNSHARE:
            _UNSHARE.append(_unshare_works())
        if _UNSHARE[0]:
            # D/systemd/journal/socket, mounted over the deepest of /run/systemd/journal,
            # /run/systemd, /run that exists (nothing is created on the host).
            d = short_dir("tlsfwd-j")
            jdir = os.path.join(d, "systemd", "journal")
            os.makedirs(jdir)
            for p in (d, os.path.join(d, "systemd"), jdir):
                os.chmod(p, 0o755)
            if os.path.isdir(JOURNAL_DIR):
                src, dst = jdir, JOURNAL_DIR
            elif os.path.isdir("/run/systemd"):
                src, dst = os.path.join(d, "systemd"), "/run/systemd"
            else:
                src, dst = d, "/run"
            if kind == "live":
                self.sock = JournalSocket(os.path.join(jdir, "socket"))
            elif kind == "stale":
                stale_socket(os.path.join(jdir, "socket"))

            def argv(cmd):
                return ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                        'mount --bind "$1" "$2" || exit 97; shift 2; exec "$@"', "sh",
                        src, dst] + list(cmd)
            self.argv = argv
            return
        # No namespaces: use the real path if nothing is there.
        if os.path.exists(JOURNAL_SOCKET):
            pytest.skip("cannot unshare a mount namespace, and %s exists (a real journald?)"
                        % JOURNAL_SOCKET)
        if os.geteuid() != 0:
            pytest.skip("cannot unshare a mount namespace nor create %s" % JOURNAL_SOCKET)
        for p in ("/run/systemd", JOURNAL_DIR):
            if not os.path.isdir(p):
                os.mkdir(p, 0o755)
                self._created.append(p)
        if kind == "live":
            self.sock = JournalSocket(JOURNAL_SOCKET)
        elif kind == "stale":
            stale_socket(JOURNAL_SOCKET)
            self._created.insert(0, JOURNAL_SOCKET)
        self.argv = None

    def close(self):
        if self.sock is not None:
            self.sock.close()
        for p in reversed(self._created):
            try:
                if os.path.isdir(p):
                    os.rmdir(p)
                else:
                    os.unlink(p)
            except OSError:
                pass


@pytest.fixture
def journal(short_dir, cleanup):
    def make(kind="live"):
        j = FakeJournal(short_dir, kind)
        cleanup.append(j)
        return j
    return make


def field_name(event, key):
    if event == "handshake" and key == "version":
        return "TLSFWD_TLS_VERSION"
    return "TLSFWD_" + "".join(c if c.isalnum() else "_" for c in key.upper())


def check_record(rec):
    """The invariants of every journal record; returns the parsed MESSAGE."""
    assert rec.get("SYSLOG_IDENTIFIER") == "tlsfwd", rec
    msg = rec.get("MESSAGE")
    assert isinstance(msg, str) and msg, rec
    parsed = parse_logfmt(msg)
    assert "ts" not in parsed, "MESSAGE should be the line without ts: %r" % msg
    assert list(parsed)[:2] == ["level", "event"], msg
    assert rec.get("PRIORITY") == PRIORITY[parsed["level"]], (
        "PRIORITY %r for level=%s" % (rec.get("PRIORITY"), parsed["level"]), rec)
    for k, v in parsed.items():
        f = field_name(parsed["event"], k)
        assert rec.get(f) == v, "field %s=%r, want %r (from MESSAGE %r)" % (
            f, rec.get(f), v, msg)
    return parsed


def test_records_go_to_the_journal(journal, ssl_upstream, service, start_tlsfwd):
    j = journal()
    up = ssl_upstream(echo_handler)
    good = service(up.port)
    fwd = start_tlsfwd({"good": good, "bad": service(refusing_port())}, {"log_level": "debug"},
                       ready=False, argv=j.argv, journal_stream=True)
    js = j.sock
    js.wait(lambda m: m.get("TLSFWD_EVENT") == "ready", 10, what="TLSFWD_EVENT=ready")
    ports = {m["TLSFWD_SERVICE"]: int(m["TLSFWD_LISTEN"].rsplit(":", 1)[1])
             for m in js.parsed() if m.get("TLSFWD_EVENT") == "listening"}
    assert set(ports) == {"good", "bad"}, js.dump()

    echo_once(ports["good"])
    b = connect(ports["bad"], 5)
    try:
        data, _how = recv_closed(b)
    finally:
        b.close()
    assert data == b""
    _i, _t, ok = js.wait(lambda m: m.get("TLSFWD_EVENT") == "handshake"
                         and m.get("TLSFWD_SERVICE") == "good", 5, what="handshake good")
    _i, _t, fail = js.wait(lambda m: m.get("TLSFWD_EVENT") == "handshake"
                           and m.get("TLSFWD_SERVICE") == "bad", 5, what="handshake bad")

    assert ok.get("TLSFWD_RESULT") == "ok" and ok.get("PRIORITY") == "6", ok
    assert ok.get("TLSFWD_TLS_VERSION", "").startswith("TLS1."), ok
    assert "TLSFWD_VERSION" not in ok, "handshake version must be TLSFWD_TLS_VERSION: %r" % ok
    assert ok.get("TLSFWD_CIPHER") and ok.get("TLSFWD_CIPHER") != "-", ok
    assert "event=handshake" in ok["MESSAGE"], ok
    assert fail.get("TLSFWD_RESULT") == "fail" and fail.get("PRIORITY") == "4", fail
    assert fail.get("TLSFWD_STAGE") == "connect", fail

    # An error record: a failed reload logs level=error lines.
    fwd.write_config({"good": dict(good, verify="maybe")})
    mark = js.mark()
    fwd.signal(signal.SIGHUP)
    _i, _t, rl = js.wait(lambda m: m.get("TLSFWD_EVENT") == "reload", 5, mark, "reload")
    assert rl.get("TLSFWD_RESULT") == "fail" and rl.get("PRIORITY") == "3", rl
    cfg = [m for m in js.parsed(mark) if m.get("TLSFWD_EVENT") == "config"]
    assert cfg and all(m.get("PRIORITY") == "3" for m in cfg), js.dump()
    assert cfg[0].get("TLSFWD_ERROR", "").startswith(fwd.config_path + ":"), cfg[0]

    fwd.signal(signal.SIGTERM)
    assert fwd.wait_exit(10) == 0
    js.wait(lambda m: m.get("TLSFWD_EVENT") == "exit", 5, what="TLSFWD_EVENT=exit")
    assert not js.errors, "unparsable journal datagrams: %r" % js.errors[:3]
    recs = js.parsed()
    events = {}
    for r in recs:
        p = check_record(r)
        if p["event"] in ("handshake", "close"):
            events.setdefault(p["conn"], []).append(p["event"])
    assert sorted(events.values()) == [["handshake", "close"]] * 2, events
    assert {r["TLSFWD_EVENT"] for r in recs} >= {"start", "listening", "ready", "handshake",
                                                "close", "signal", "exit"}
    assert b"event=" not in fwd.raw, (
        "records written to stderr although the journal took them:\n" + fwd.log_text(20))


@pytest.mark.parametrize("how", ["no_socket", "stale_socket"])
def test_unreachable_journal_falls_back_to_stderr(how, journal, ssl_upstream, service,
                                                  start_tlsfwd):
    """The usual stderr lines (with ts: the teardown checks every line)."""
    j = journal("none" if how == "no_socket" else "stale")
    up = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service(up.port)}, argv=j.argv, journal_stream=True,
                       ready=False)
    fwd.wait_ready(5)
    echo_once(fwd.ports["svc"])
    hs = fwd.wait_event("handshake", 5, service="svc")
    assert hs["result"] == "ok", hs
    assert list(hs)[:3] == ["ts", "level", "event"], "not the usual stderr line: %r" % hs
    fwd.wait_event("close", 5, service="svc")


def test_other_journal_stream_keeps_stderr(journal, ssl_upstream, service, start_tlsfwd):
    """JOURNAL_STREAM names another file (stderr is not the journal): plain stderr."""
    j = journal()
    up = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"svc": service(up.port)}, argv=j.argv,
                       env={"JOURNAL_STREAM": "1:1"})
    echo_once(fwd.ports["svc"])
    fwd.wait_event("close", 5, service="svc")
    assert j.sock.parsed() == [], "sent to the journal although stderr is not it:\n" + \
        j.sock.dump()
