"""systemd's protocols as tlsfwd sees them: sd_notify and journal sockets
(NotifySocket, JournalSocket), socket activation (fds_at_3, LISTEN_PID) and
the watchdog pid."""

import os
import re
import socket
import threading
import time

from harness.clients import close_quietly


def with_listen_pid(cmd):
    """argv wrapper: run cmd through `sh -c` that sets LISTEN_PID to its own pid
    and execs cmd, so that LISTEN_PID is the pid of tlsfwd itself."""
    return ["/bin/sh", "-c", 'LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"'] + list(cmd)


def with_watchdog_pid(cmd):
    """argv wrapper: WATCHDOG_PID = the pid of tlsfwd itself."""
    return ["/bin/sh", "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$0" "$@"'] + list(cmd)


def fds_at_3(fds, then=None):
    """preexec_fn putting fds at 3, 4, ... in the child (with pass_fds=range(3, 3+n)),
    the way systemd passes sockets. `then`: another preexec_fn to run after."""
    fds = list(fds)

    def preexec():
        import fcntl
        tmp = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in fds]
        for i, t in enumerate(tmp):
            os.dup2(t, 3 + i, inheritable=True)
            os.close(t)
        if then is not None:
            then()
    return preexec


class _DgramReceiver:
    """An AF_UNIX datagram socket bound at `path`, drained by a thread into
    self.msgs: list of (monotonic time, parsed dict, raw bytes, sender pid)."""

    def __init__(self, path):
        self.path = path
        self.msgs = []
        self.errors = []
        self._cond = threading.Condition()
        self._stop = False
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        os.chmod(path, 0o666)        # a daemon that dropped privileges must still send
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.settimeout(0.2)
        self._t = threading.Thread(target=self._loop, name="dgram-" + os.path.basename(path),
                                   daemon=True)
        self._t.start()

    def parse(self, data, fds):
        raise NotImplementedError

    def _loop(self):
        creds_len = socket.CMSG_SPACE(12)
        fds_len = socket.CMSG_SPACE(4 * 8)
        while not self._stop:
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(1 << 20, creds_len + fds_len)
            except socket.timeout:
                continue
            except OSError:
                return
            t = time.monotonic()
            pid, fds = None, []
            for level, typ, cdata in anc:
                if level == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS:
                    pid = int.from_bytes(cdata[0:4], "little", signed=True)
                elif level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                    n = len(cdata) // 4
                    fds += [int.from_bytes(cdata[4 * i:4 * i + 4], "little") for i in range(n)]
            try:
                parsed = self.parse(data, fds)
            except Exception as e:  # noqa: BLE001 - reported by the tests
                parsed = None
                self.errors.append((bytes(data), e))
            finally:
                for fd in fds:
                    os.close(fd)
            with self._cond:
                self.msgs.append((t, parsed, bytes(data), pid))
                self._cond.notify_all()

    def mark(self):
        with self._cond:
            return len(self.msgs)

    def wait(self, pred, timeout=10.0, start=0, what="datagram"):
        """Wait for a parsed message satisfying pred; returns (index, time, dict)."""
        deadline = time.monotonic() + timeout
        i = start
        with self._cond:
            while True:
                while i < len(self.msgs):
                    t, m, _raw, _pid = self.msgs[i]
                    if m is not None and pred(m):
                        return i, t, m
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("timed out after %.1fs waiting for %s on %s; got:\n%s"
                                         % (timeout, what, self.path, self.dump()))
                self._cond.wait(left)

    def parsed(self, start=0):
        with self._cond:
            return [m for _t, m, _r, _p in self.msgs[start:] if m is not None]

    def dump(self, last=20):
        with self._cond:
            return "\n".join("%.3f pid=%s %r" % (t, pid, raw[:300])
                             for t, _m, raw, pid in self.msgs[-last:])

    def close(self):
        self._stop = True
        close_quietly(self.sock)
        self._t.join(2)
        try:
            os.unlink(self.path)
        except OSError:
            pass


class NotifySocket(_DgramReceiver):
    """A NOTIFY_SOCKET: each datagram is newline-separated KEY=VALUE assignments."""

    def parse(self, data, fds):
        out = {}
        for line in data.decode("utf-8").split("\n"):
            if not line:
                continue
            k, eq, v = line.partition("=")
            if not eq:
                raise ValueError("notify line without '=': %r" % line)
            out[k] = v
        return out

    def wait_key(self, key, value=None, timeout=10.0, start=0):
        return self.wait(lambda m: key in m and (value is None or m[key] == value), timeout,
                         start, "%s=%s" % (key, "*" if value is None else value))


def parse_journal_native(data):
    """journald's native protocol: `KEY=VALUE\\n`, or `KEY\\n` + 64-bit LE length +
    value + `\\n` for binary values. Returns {KEY: str}; a repeated key -> list."""
    out = {}
    i, n = 0, len(data)
    while i < n:
        nl = data.index(b"\n", i)
        eq = data.find(b"=", i, nl)
        if eq >= 0:
            key, val = data[i:eq], data[eq + 1:nl]
            i = nl + 1
        else:
            key = data[i:nl]
            ln = int.from_bytes(data[nl + 1:nl + 9], "little")
            val = data[nl + 9:nl + 9 + ln]
            if len(val) != ln or data[nl + 9 + ln:nl + 10 + ln] != b"\n":
                raise ValueError("bad binary field %r" % key)
            i = nl + 10 + ln
        if not re.match(rb"^[A-Z0-9_]+$", key) or key.startswith(b"_"):
            raise ValueError("invalid journal field name %r" % key)
        k, v = key.decode(), val.decode("utf-8", "surrogateescape")
        if k in out:
            out[k] = (out[k] if isinstance(out[k], list) else [out[k]]) + [v]
        else:
            out[k] = v
    return out


class JournalSocket(_DgramReceiver):
    """Stands in for /run/systemd/journal/socket (large entries may come as a memfd)."""

    def parse(self, data, fds):
        if not data and fds:
            size = os.fstat(fds[0]).st_size
            data = os.pread(fds[0], size, 0)
        return parse_journal_native(data)
