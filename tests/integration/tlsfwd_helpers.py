"""Helpers for the tlsfwd integration tests.

- parse_logfmt(): a strict logfmt tokenizer following README.md "Log format".
- Tlsfwd: one tlsfwd process, its stderr drained by a thread into parsed records.
- render_ini(): write a config file.
- det_chunks()/det_digest(): deterministic pseudo-random data streams.
- Upstream servers: Python ssl (blocking socket or memory-BIO), raw TCP,
  and `openssl s_server`.
- Plain TCP client helpers with timeouts everywhere.
"""

import errno
import hashlib
import json
import os
import queue
import re
import select
import shlex
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import traceback

SANITIZER_MARKERS = (b"ERROR: AddressSanitizer", b"runtime error:", b"LeakSanitizer")
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
LEVELS = ("error", "warn", "info", "debug")
# Set by `make valgrind` (tests/audit/audit.mk), unset otherwise:
# TLSFWD_WRAPPER       words put before every tlsfwd command line (Tlsfwd,
#                      run_tlsfwd); "{log}" in them becomes a fresh file in
#                      TLSFWD_WRAPPER_LOGS (default: the temp directory), the
#                      valgrind report checked when the process has ended.
# TLSFWD_SLOW          how many times slower tlsfwd is under the wrapper: the
#                      waits for tlsfwd (log lines, exit, sockets) are scaled.
WRAPPER = shlex.split(os.environ.get("TLSFWD_WRAPPER", ""))
SLOW = float(os.environ.get("TLSFWD_SLOW") or 1)
SOCK_TIMEOUT = 10.0 * SLOW
VALGRIND_SUMMARY_RE = re.compile(r"ERROR SUMMARY: (\d+) errors")


# ---------------------------------------------------------------------------
# logfmt
# ---------------------------------------------------------------------------

class LogfmtError(ValueError):
    pass


_KEY_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_HEX = set("0123456789abcdefABCDEF")
_SIMPLE_ESC = {'"': b'"', "\\": b"\\", "n": b"\n", "r": b"\r", "t": b"\t"}


def parse_logfmt(line):
    """Parse one logfmt line into a dict (insertion order = line order).

    Grammar (README): pairs `key=value` separated by one space; a value is
    bare (no space, `=`, `"`, nor empty) or double-quoted; in both, `\\\\`,
    `\\"`, `\\n`, `\\r`, `\\t` and `\\xHH` are escapes. \\xHH yields a raw
    byte; the value is decoded as UTF-8 with surrogateescape.
    Raises LogfmtError on anything else (duplicate keys, stray characters,
    raw control characters, unterminated quotes...).
    """
    if isinstance(line, bytes):
        line = line.decode("utf-8")
    if line.endswith("\n"):
        line = line[:-1]
    out = {}
    i, n = 0, len(line)
    if n == 0:
        raise LogfmtError("empty line")
    while i < n:
        start = i
        while i < n and line[i] in _KEY_CHARS:
            i += 1
        key = line[start:i]
        if not key:
            raise LogfmtError("expected a key at column %d: %r" % (i, line))
        if i >= n or line[i] != "=":
            raise LogfmtError("expected '=' after key %r at column %d: %r" % (key, i, line))
        i += 1
        buf = bytearray()
        if i < n and line[i] == '"':
            i += 1
            while True:
                if i >= n:
                    raise LogfmtError("unterminated quoted value for %r: %r" % (key, line))
                c = line[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\":
                    i = _escape(line, i, buf, key)
                    continue
                if ord(c) < 0x20 or c == "\x7f":
                    raise LogfmtError("raw control character in value of %r" % key)
                buf += c.encode("utf-8", "surrogateescape")
                i += 1
        else:
            if i >= n or line[i] == " ":
                raise LogfmtError("empty unquoted value for %r: %r" % (key, line))
            while i < n and line[i] != " ":
                c = line[i]
                if c in '"=':
                    raise LogfmtError("%r in unquoted value of %r: %r" % (c, key, line))
                if c == "\\":
                    i = _escape(line, i, buf, key)
                    continue
                if ord(c) < 0x20 or c == "\x7f":
                    raise LogfmtError("raw control character in value of %r" % key)
                buf += c.encode("utf-8", "surrogateescape")
                i += 1
        if key in out:
            raise LogfmtError("duplicate key %r: %r" % (key, line))
        out[key] = bytes(buf).decode("utf-8", "surrogateescape")
        if i < n:
            if line[i] != " ":
                raise LogfmtError("expected a space at column %d: %r" % (i, line))
            i += 1
            if i >= n:
                raise LogfmtError("trailing space: %r" % line)
    return out


def _escape(line, i, buf, key):
    if i + 1 >= len(line):
        raise LogfmtError("dangling backslash in value of %r" % key)
    e = line[i + 1]
    if e in _SIMPLE_ESC:
        buf += _SIMPLE_ESC[e]
        return i + 2
    if e == "x":
        hh = line[i + 2:i + 4]
        if len(hh) == 2 and all(ch in _HEX for ch in hh):
            buf.append(int(hh, 16))
            return i + 4
    raise LogfmtError("bad escape \\%s in value of %r" % (e, key))


def json_log_form(raw):
    """What a JSON log line decodes to for the value bytes `raw` (README "Log
    format"): valid UTF-8, newline, CR, tab, quote and backslash come back as
    they were; other control bytes and bytes that are not UTF-8 come back as
    the four characters backslash, x, H, H. (In logfmt, parse_logfmt() gives
    back the bytes themselves.)"""
    out = []
    for ch in raw.decode("utf-8", "surrogateescape"):
        o = ord(ch)
        if 0xdc80 <= o <= 0xdcff:
            out.append("\\x%02x" % (o - 0xdc00))
        elif (o < 0x20 and ch not in "\n\r\t") or o == 0x7f:
            out.append("\\x%02x" % o)
        else:
            out.append(ch)
    return "".join(out)


def parse_line(line, fmt):
    """Parse a log line in 'logfmt' or 'json' format into a dict of strings/numbers."""
    if fmt == "json":
        obj = json.loads(line)
        if not isinstance(obj, dict):
            raise ValueError("JSON log line is not an object: %r" % line)
        return obj
    return parse_logfmt(line)


def num(v):
    """A count or *_ms value as a number (logfmt gives strings, JSON numbers)."""
    if isinstance(v, bool):
        raise TypeError("boolean where a number was expected")
    if isinstance(v, (int, float)):
        return v
    return float(v) if any(c in v for c in ".eE") else int(v)


# ---------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------

def render_ini(global_opts, services):
    lines = ["; generated by tests/integration", "[global]"]
    for k, v in global_opts.items():
        lines.append("%s = %s" % (k, v))
    for name, opts in services.items():
        lines.append("")
        lines.append("[%s]" % name)
        for k, v in opts.items():
            if v is None:
                continue
            # a list or tuple value repeats the key (e.g. several pin_sha256 lines)
            for one in (v if isinstance(v, (list, tuple)) else [v]):
                lines.append("%s = %s" % (k, one))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# the daemon
# ---------------------------------------------------------------------------

# The variables of systemd's protocols (sd_notify, socket activation, watchdog,
# journal stream). tlsfwd children never inherit them from the test's own
# environment (the suite may itself run under systemd); tests set them.
SYSTEMD_ENV = ("NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES",
               "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")


def child_env(extra=None):
    """os.environ without SYSTEMD_ENV, updated by extra (a None value removes)."""
    env = {k: v for k, v in os.environ.items() if k not in SYSTEMD_ENV}
    for k, v in (extra or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


def wrap_command(cmd):
    """(cmd behind WRAPPER, path of its report or None)."""
    if not WRAPPER:
        return list(cmd), None
    fd, report = tempfile.mkstemp(prefix="tlsfwd.", suffix=".log",
                                  dir=os.environ.get("TLSFWD_WRAPPER_LOGS") or None)
    os.close(fd)
    return [w.replace("{log}", report) for w in WRAPPER] + list(cmd), report


def wrapper_problems(report, rc):
    """The valgrind report of a process that exited with rc: a non-zero ERROR
    SUMMARY (with --errors-for-leak-kinds=definite that counts definite
    leaks), no summary at all unless SIGKILL left no chance to write one,
    and after a clean exit (rc 0) a descriptor tlsfwd opened and left open
    (--track-fds=yes). Not counted: what the test passed in, and the journal
    socket libsystemd keeps for the life of the process."""
    if report is None:
        return []
    with open(report, errors="replace") as f:
        text = f.read()
    counts = [int(n) for n in VALGRIND_SUMMARY_RE.findall(text)]
    if not counts:
        if rc == -signal.SIGKILL:
            return []
        return ["no valgrind ERROR SUMMARY in %s (rc=%s):\n%s" % (report, rc, text[-4000:])]
    if any(counts):
        return ["valgrind: %d errors (%s):\n%s" % (sum(counts), report, text[-12000:])]
    if rc != 0:
        return []
    lines = [re.sub(r"^==\d+== ?", "", ln) for ln in text.splitlines()]
    blocks, cur = [], None
    for ln in lines:
        if ln.startswith("Open "):
            cur = [ln]
            blocks.append(cur)
        elif cur is not None and ln.strip():
            cur.append(ln)
        else:
            cur = None
    left = ["\n".join(b) for b in blocks
            if not any("<inherited from parent>" in ln or "sd_journal" in ln for ln in b)]
    if left:
        return ["descriptors open at exit (%s):\n%s" % (report, "\n".join(left)[-6000:])]
    return []


class Tlsfwd:
    """A running tlsfwd; stderr is drained into self.lines / self.records."""

    def __init__(self, binary, config_path, log_format="logfmt", workdir=None, preexec_fn=None,
                 env=None, argv=None, pass_fds=(), journal_stream=False):
        """env: extra environment variables (None values remove one); the
        systemd protocol variables (SYSTEMD_ENV) are never inherited from the
        test's own environment. argv: function mapping the command list
        [binary, -c, config] to the one to run (e.g. through `sh -c`).
        journal_stream: set JOURNAL_STREAM to the dev:ino of tlsfwd's stderr."""
        self.binary = binary
        self.config_path = config_path
        self.log_format = log_format
        self.lines = []          # decoded stderr lines (without newline)
        self.raw = bytearray()   # all stderr bytes
        self.records = []        # parsed dict per line, or None when unparsable
        self.parse_errors = []   # (line, exception)
        self.ports = {}
        self.listen = {}
        self.client_service = {}  # (local, peer) address -> service, see conn_of
        self.expect_exit = False
        self.global_opts = None  # set by the start_tlsfwd fixture (for write_config)
        self._cond = threading.Condition()
        self._eof = False
        out_path = os.path.join(workdir or os.path.dirname(config_path), "tlsfwd.stdout")
        self._stdout = open(out_path, "wb")
        # Our own pipe rather than subprocess.PIPE, so that its identity (what
        # systemd puts in JOURNAL_STREAM) is known before the child starts.
        rfd, wfd = os.pipe()
        st = os.fstat(wfd)
        self.stderr_id = "%d:%d" % (st.st_dev, st.st_ino)
        full_env = child_env(env)
        if journal_stream:
            full_env["JOURNAL_STREAM"] = self.stderr_id
        cmd, self.report = wrap_command([binary, "-c", config_path])
        if argv is not None:
            cmd = argv(cmd)
        self.started = time.monotonic()
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._stdout,
                                         stderr=wfd, preexec_fn=preexec_fn, env=full_env,
                                         pass_fds=tuple(pass_fds))
        except BaseException:
            os.close(rfd)
            raise
        finally:
            os.close(wfd)
        self._stderr = os.fdopen(rfd, "rb")
        self._thread = threading.Thread(target=self._drain, name="tlsfwd-stderr", daemon=True)
        self._thread.start()

    @property
    def pid(self):
        return self.proc.pid

    def write_config(self, services, global_opts=None):
        """Replace the config file (atomically) with the fixture's [global]
        defaults updated by global_opts, and `services`; returns the text."""
        g = dict(self.global_opts or {})
        g.update(global_opts or {})
        text = render_ini(g, services)
        tmp = self.config_path + ".new"
        with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.config_path)
        return text

    def reload(self, timeout=10.0):
        """SIGHUP, then wait for the next event=reload line; returns (index, record)
        where index is where the log stood when the signal was sent."""
        with self._cond:
            start = len(self.records)
        self.signal(signal.SIGHUP)
        rec = self.wait_for(lambda r: r.get("event") == "reload", timeout, start,
                            "event=reload after SIGHUP")[1]
        return start, rec

    def mark(self):
        """The current number of log lines (a start index for wait_for)."""
        with self._cond:
            return len(self.records)

    # -- stderr ----------------------------------------------------------------
    def _drain(self):
        f = self._stderr
        try:
            for raw in iter(f.readline, b""):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    text = raw.decode("utf-8", "replace")
                text = text.rstrip("\n")
                rec = None
                try:
                    rec = parse_line(text, self.log_format)
                except Exception as e:  # noqa: BLE001 - recorded for the checks
                    self.parse_errors.append((text, e))
                with self._cond:
                    self.raw += raw
                    self.lines.append(text)
                    self.records.append(rec)
                    self._cond.notify_all()
        finally:
            f.close()
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    def log_text(self, last=None):
        with self._cond:
            lines = self.lines if last is None else self.lines[-last:]
            return "\n".join(lines)

    def wait_for(self, pred, timeout=10.0, start=0, what="log line"):
        """Wait until a parsed record satisfies pred; return (index, record)."""
        timeout *= SLOW
        deadline = time.monotonic() + timeout
        i = start
        with self._cond:
            while True:
                while i < len(self.records):
                    r = self.records[i]
                    if r is not None and pred(r):
                        return i, r
                    i += 1
                if self._eof:
                    raise AssertionError("tlsfwd exited (rc=%s) before %s appeared; log:\n%s"
                                         % (self.proc.poll(), what, "\n".join(self.lines[-40:])))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("timed out after %.1fs waiting for %s; log:\n%s"
                                         % (timeout, what, "\n".join(self.lines[-40:])))
                self._cond.wait(left)

    def wait_event(self, event, timeout=10.0, start=0, **fields):
        def pred(r):
            return r.get("event") == event and all(str(r.get(k)) == str(v) for k, v in fields.items())
        desc = "event=%s %s" % (event, " ".join("%s=%s" % kv for kv in fields.items()))
        return self.wait_for(pred, timeout, start, desc)[1]

    def find(self, event=None, **fields):
        with self._cond:
            recs = [r for r in self.records if r is not None]
        return [r for r in recs if (event is None or r.get("event") == event)
                and all(str(r.get(k)) == str(v) for k, v in fields.items())]

    def wait_ready(self, timeout=10.0):
        self.wait_event("ready", timeout)
        for r in self.find("listening"):
            addr = r["listen"]
            self.listen[r["service"]] = addr
            if not addr.startswith("unix:"):
                self.ports[r["service"]] = int(addr.rsplit(":", 1)[1])
        return self

    # -- per connection --------------------------------------------------------
    def conn_of(self, sock, timeout=10.0):
        """The handshake record for the client socket `sock`: matched on client=ADDR
        and, for sockets made by the `client` fixture, on the service too (Linux
        reuses a source port for sockets to different listeners)."""
        host, port = sock.getsockname()[:2]
        client = "%s:%d" % (host, port)
        try:
            service = self.client_service.get(((host, port), sock.getpeername()[:2]))
        except OSError:  # reset by the peer: match on the client address alone
            service = None
        return self.wait_for(lambda r: r.get("event") == "handshake" and r.get("client") == client
                             and (service is None or r.get("service") == service),
                             timeout, what="handshake line for client=%s service=%s"
                             % (client, service))[1]

    def wait_handshake(self, service, timeout=10.0):
        return self.wait_event("handshake", timeout, service=service)

    def wait_close(self, conn, timeout=10.0):
        return self.wait_event("close", timeout, conn=conn)

    # -- lifecycle ---------------------------------------------------------------
    def cpu_seconds(self):
        """utime + stime of the process, from /proc/PID/stat."""
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=10.0):
        self.expect_exit = True
        timeout *= SLOW
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("tlsfwd did not exit within %.1fs; log:\n%s"
                                 % (timeout, self.log_text(40)))
        self._thread.join(5)
        return rc

    def stop(self):
        """Stop (SIGTERM, then a second SIGTERM, then SIGKILL); return a list of problems."""
        problems = []
        was_running = self.proc.poll() is None
        if not was_running and not self.expect_exit:
            problems.append("tlsfwd exited unexpectedly during the test with rc=%s"
                            % self.proc.returncode)
        if was_running:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(8 * SLOW)
            except subprocess.TimeoutExpired:
                problems.append("tlsfwd did not exit within %gs of SIGTERM" % (8 * SLOW))
                self.proc.send_signal(signal.SIGTERM)
                try:
                    rc = self.proc.wait(3 * SLOW)
                except subprocess.TimeoutExpired:
                    problems.append("tlsfwd ignored a second SIGTERM; killed")
                    self.proc.kill()
                    rc = self.proc.wait(5)
            if rc != 0 and not problems:
                problems.append("tlsfwd exited with rc=%s after SIGTERM (expected 0)" % rc)
        self._thread.join(5)
        self._stdout.close()
        problems.extend(wrapper_problems(self.report, self.proc.wait()))
        problems.extend(self.check_invariants())
        return problems

    def check_invariants(self):
        problems = []
        for m in SANITIZER_MARKERS:
            if m in self.raw:
                problems.append("sanitizer report in tlsfwd stderr (%r)" % m.decode())
        if problems:
            # sanitizer output is not a log line; do not report parse errors too
            return problems + ["stderr:\n" + self.raw.decode("utf-8", "replace")[-6000:]]
        for text, e in self.parse_errors[:5]:
            problems.append("unparsable %s log line %r: %s" % (self.log_format, text, e))
        recs = [r for r in self.records if r is not None]
        for r in recs:
            keys = list(r.keys())[:3]
            if keys != ["ts", "level", "event"]:
                problems.append("line does not start with ts, level, event: %r" % r)
                break
            if not TS_RE.match(str(r["ts"])) or r["level"] not in LEVELS:
                problems.append("bad ts/level: %r" % r)
                break
        hs, cl = {}, {}
        order = {}   # (event, conn) -> index of its first line (a dict: 10 000s of conns)
        for i, r in enumerate(recs):
            if r.get("event") in ("handshake", "close"):
                c = str(r.get("conn"))
                (hs if r["event"] == "handshake" else cl).setdefault(c, []).append(r)
                order.setdefault((r["event"], c), i)
        for c in sorted(set(hs) | set(cl), key=str):
            if len(hs.get(c, [])) != 1 or len(cl.get(c, [])) != 1:
                problems.append("conn=%s has %d handshake and %d close lines (want 1 and 1)"
                                % (c, len(hs.get(c, [])), len(cl.get(c, []))))
            elif order[("handshake", c)] > order[("close", c)]:
                problems.append("conn=%s: close line before handshake line" % c)
            elif hs[c][0].get("service") != cl[c][0].get("service"):
                problems.append("conn=%s: service differs between handshake and close" % c)
        return problems


def run_tlsfwd(binary, args, timeout=15, env=None, argv=None, preexec_fn=None, pass_fds=()):
    """Run tlsfwd to completion (for -t/-V/-h); asserts no sanitizer report.
    env/argv as for Tlsfwd (systemd variables are not inherited); asserts
    a clean valgrind report under TLSFWD_WRAPPER."""
    cmd, report = wrap_command([binary] + list(args))
    if argv is not None:
        cmd = argv(cmd)
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout * SLOW, env=child_env(env),
                       preexec_fn=preexec_fn, pass_fds=tuple(pass_fds))
    for m in SANITIZER_MARKERS:
        assert m not in r.stderr, "sanitizer report:\n" + r.stderr.decode("utf-8", "replace")
    problems = wrapper_problems(report, r.returncode)
    assert not problems, "\n".join(problems)
    return r


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------

def det_chunks(seed, total):
    """Deterministic pseudo-random bytes: SHAKE-256(seed || counter) blocks of 1 MiB
    (the stream depends only on seed and total)."""
    chunk = 1 << 20
    if isinstance(seed, str):
        seed = seed.encode()
    i = 0
    left = total
    while left > 0:
        n = min(chunk, left)
        yield hashlib.shake_256(seed + i.to_bytes(8, "big")).digest(n)
        left -= n
        i += 1


def det_bytes(seed, total):
    return b"".join(det_chunks(seed, total))


def det_digest(seed, total):
    h = hashlib.sha256()
    for c in det_chunks(seed, total):
        h.update(c)
    return h.hexdigest()


# ---------------------------------------------------------------------------
# clients
# ---------------------------------------------------------------------------

def connect(port, timeout=SOCK_TIMEOUT, host="127.0.0.1"):
    s = socket.create_connection((host, port), timeout=timeout)
    s.settimeout(timeout)
    return s


def connect_unix(path, timeout=SOCK_TIMEOUT):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    return s


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        d = sock.recv(min(65536, n - len(buf)))
        if not d:
            raise AssertionError("EOF after %d of %d bytes" % (len(buf), n))
        buf += d
    return bytes(buf)


def recv_all(sock, limit=1 << 30):
    """Read until EOF; returns bytes. A reset raises."""
    buf = bytearray()
    while True:
        d = sock.recv(65536)
        if not d:
            return bytes(buf)
        buf += d
        if len(buf) > limit:
            raise AssertionError("more than %d bytes" % limit)


def send_quiet(sock, data):
    """Send, tolerating a peer that already closed (the close is what is tested)."""
    try:
        sock.sendall(data)
        return True
    except (BrokenPipeError, ConnectionResetError):
        return False


def recv_closed(sock):
    """Read until the peer closes; returns (data, how) with how 'eof' or 'reset'."""
    buf = bytearray()
    while True:
        try:
            d = sock.recv(65536)
        except ConnectionResetError:
            return bytes(buf), "reset"
        if not d:
            return bytes(buf), "eof"
        buf += d


# ---------------------------------------------------------------------------
# upstream servers
# ---------------------------------------------------------------------------

def server_context(cert, key, *, max_version=None, min_version=None, client_ca=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if max_version is not None:
        ctx.maximum_version = max_version
    if min_version is not None:
        ctx.minimum_version = min_version
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(client_ca)
    return ctx


class BioConn:
    """Server-side TLS over a raw socket through memory BIOs: full control of close_notify.

    recv() returns b'' on close_notify and raises TruncatedError on a TCP EOF
    without close_notify.
    """

    class TruncatedError(Exception):
        pass

    def __init__(self, raw, ctx, timeout=SOCK_TIMEOUT):
        self.raw = raw
        self.raw.settimeout(timeout)
        self.inc = ssl.MemoryBIO()
        self.out = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_side=True)
        self.tcp_eof = False
        self.got_close_notify = False

    def _flush(self):
        d = self.out.read()
        if d:
            self.raw.sendall(d)

    def _fill(self):
        if self.tcp_eof:
            raise BioConn.TruncatedError("TCP EOF without close_notify")
        d = self.raw.recv(65536)
        if not d:
            self.tcp_eof = True
            self.inc.write_eof()
        else:
            self.inc.write(d)

    def handshake(self):
        while True:
            try:
                self.obj.do_handshake()
                self._flush()
                return
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()

    def recv(self, n=65536):
        while True:
            try:
                d = self.obj.read(n)
                self._flush()
                if not d:
                    self.got_close_notify = True   # read() gives b'' on close_notify
                return d
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
            except ssl.SSLZeroReturnError:
                self.got_close_notify = True
                return b""
            except ssl.SSLEOFError as e:
                raise BioConn.TruncatedError(str(e))

    def recv_until_eof(self):
        buf = bytearray()
        while True:
            d = self.recv()
            if not d:
                return bytes(buf)
            buf += d

    def send(self, data):
        view = memoryview(data)
        for off in range(0, len(view), 16384):
            self.obj.write(view[off:off + 16384])
            self._flush()

    def send_close_notify(self):
        try:
            self.obj.unwrap()
        except ssl.SSLWantReadError:
            pass
        self._flush()

    def close(self):
        try:
            self.raw.close()
        except OSError:
            pass


def resolve_first(host, port):
    """The address tlsfwd tries first for upstream HOST:PORT, as it logs it
    ("127.0.0.1:P" or "[::1]:P"): getaddrinfo's first answer with tlsfwd's
    hints. Debian's /etc/hosts maps localhost to ::1 and 127.0.0.1, others
    only to 127.0.0.1: a test that names localhost expects what it resolves to."""
    ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICSERV)[0]
    if ai[0] == socket.AF_INET6:
        return "[%s]:%d" % (ai[4][0], port)
    return "%s:%d" % (ai[4][0], port)


def localhost_addresses():
    """The loopback addresses `localhost` resolves to here, in getaddrinfo's order."""
    out = []
    for ai in socket.getaddrinfo("localhost", 0, 0, socket.SOCK_STREAM):
        if ai[4][0] not in out:
            out.append(ai[4][0])
    return out


class LoopbackListener:
    """One TCP port listening on every address `localhost` resolves to (a socket
    per address), so that an upstream named localhost is reached at the first
    address tlsfwd tries, whatever this machine's /etc/hosts says. Only loopback
    addresses: nothing listens on the machine's other interfaces. The accept()
    / settimeout() / getsockname() / close() of one socket."""

    def __init__(self, backlog):
        addrs = [a for a in localhost_addresses() if a in ("127.0.0.1", "::1")] or ["127.0.0.1"]
        for _ in range(50):
            self.socks = []
            try:
                port = 0
                for a in list(addrs):
                    s = socket.socket(socket.AF_INET6 if ":" in a else socket.AF_INET,
                                      socket.SOCK_STREAM)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    if ":" in a:
                        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    try:
                        s.bind((a, port))
                    except OSError as e:
                        s.close()
                        if e.errno == errno.EADDRINUSE or len(addrs) == 1:
                            raise
                        addrs.remove(a)     # e.g. no ::1 in a fresh network namespace
                        continue
                    self.socks.append(s)
                    s.listen(backlog)
                    port = s.getsockname()[1]
                self.port = port
                break
            except OSError as e:
                for s in self.socks:
                    s.close()
                if e.errno != errno.EADDRINUSE:
                    raise
                # the first address's ephemeral port is taken on another: again
        else:
            raise AssertionError("no free port on all of %r" % addrs)
        self.timeout = None

    def settimeout(self, t):
        self.timeout = t

    def getsockname(self):
        return self.socks[0].getsockname()

    def fileno(self):
        return self.socks[0].fileno()

    def accept(self):
        try:
            ready, _, _ = select.select(self.socks, [], [], self.timeout)
        except (ValueError, OSError) as e:   # closed meanwhile
            raise OSError("listener closed") from e
        if not ready:
            raise socket.timeout("accept timed out")
        conn, addr = ready[0].accept()
        conn.setblocking(True)
        return conn, addr

    def close(self):
        for s in self.socks:
            s.close()


def listen_socket(backlog):
    """A TCP listener on localhost (LoopbackListener), ephemeral port, with a
    short accept timeout so that accept loops notice when they are asked to stop."""
    sock = LoopbackListener(backlog)
    sock.settimeout(0.2)
    return sock


def accept_loop(sock, stopped, on_accept):
    """Accept until stopped() or the socket is closed; hand each to on_accept."""
    while not stopped():
        try:
            conn, _ = sock.accept()
        except socket.timeout:
            continue
        except OSError:
            return
        on_accept(conn)


class Upstream:
    """A TCP server on localhost, ephemeral port (listen_socket); each connection gets a thread running handler(conn).

    mode 'ssl': conn is an ssl.SSLSocket (suppress_ragged_eofs=False, so a
                truncation raises instead of looking like EOF);
    mode 'bio': conn is a BioConn (handshake already done);
    mode 'raw': conn is the plain socket.
    Return values of handler go to self.results (a Queue); exceptions from the
    handshake to self.handshake_errors, from the handler to self.errors.
    """

    def __init__(self, handler, mode="ssl", ctx=None, backlog=512, sock=None):
        """sock: a listening socket to serve instead of a new one on localhost
        (e.g. made inside another network namespace by NetNs.call(listen_socket, n))."""
        self.handler = handler
        self.mode = mode
        self.ctx = ctx
        self.results = queue.Queue()
        self.errors = []
        self.handshake_errors = []
        self.accepted = 0
        self._conns = []
        self._threads = []
        self._stop = False
        self._lock = threading.Lock()
        self.sock = sock if sock is not None else listen_socket(backlog)
        self.port = self.sock.getsockname()[1]
        self._event = threading.Condition()
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._accept_thread.start()

    def _accept_loop(self):
        accept_loop(self.sock, lambda: self._stop, self._start_serving)

    def _start_serving(self, raw):
        with self._lock:
            self.accepted += 1
            self._conns.append(raw)
        t = threading.Thread(target=self._serve, args=(raw,), daemon=True)
        self._threads.append(t)
        t.start()

    def _serve(self, raw):
        raw.settimeout(SOCK_TIMEOUT)
        conn = raw
        try:
            if self.mode == "ssl":
                conn = self.ctx.wrap_socket(raw, server_side=True, suppress_ragged_eofs=False)
                with self._lock:
                    self._conns.append(conn)
            elif self.mode == "bio":
                conn = BioConn(raw, self.ctx)
                conn.handshake()
        except Exception as e:  # noqa: BLE001
            with self._event:
                self.handshake_errors.append(e)
                self._event.notify_all()
            _close(raw)
            return
        try:
            res = self.handler(conn)
            self.results.put(res)
        except Exception as e:  # noqa: BLE001
            with self._event:
                self.errors.append((e, traceback.format_exc()))
                self._event.notify_all()
        finally:
            _close(conn)
            _close(raw)

    def wait_handshake_error(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        with self._event:
            while not self.handshake_errors:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("the upstream saw no failed handshake within %.1fs"
                                         % timeout)
                self._event.wait(left)
            return self.handshake_errors[0]

    def result(self, timeout=10.0):
        try:
            return self.results.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("upstream handler produced no result within %.1fs; errors=%r"
                                 % (timeout, self.errors))

    def close(self):
        self._stop = True
        _close(self.sock)
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            _close(c)
        self._accept_thread.join(2)
        for t in self._threads:
            t.join(2)


def _close(s):
    try:
        s.close()
    except OSError:
        pass


# -- handlers ------------------------------------------------------------------

def echo_handler(conn):
    """Echo until EOF (close_notify), then send close_notify and close; returns bytes echoed."""
    total = 0
    while True:
        d = conn.recv(65536)
        if not d:
            break
        conn.sendall(d)
        total += len(d)
    conn.unwrap()
    return total


class SilentHolder:
    """Plain TCP listener that accepts and never answers (holds sockets until close())."""

    def __init__(self):
        self.sock = listen_socket(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.received = bytearray()
        self._stop = False
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self):
        accept_loop(self.sock, lambda: self._stop, self.conns.append)

    def close(self):
        self._stop = True
        _close(self.sock)
        self._t.join(2)
        for c in self.conns:
            _close(c)


def closed_port():
    """A port nothing listens on, on any address localhost resolves to."""
    s = LoopbackListener(1)
    port = s.port
    s.close()
    return port


class OpenSSLServer:
    """`openssl s_server -accept 0 ...`; port parsed from its `ACCEPT ...:PORT` line."""

    def __init__(self, cert, key, *extra, chain=None, timeout=10.0, accept=0):
        args = ["openssl", "s_server", "-accept", str(accept), "-cert", cert, "-key", key]
        if chain:
            args += ["-cert_chain", chain]
        args += list(extra)
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.lines = []
        self._cond = threading.Condition()
        self._eof = False
        self._t = threading.Thread(target=self._drain, daemon=True)
        self._t.start()
        self.port = None
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.port is None:
                for ln in self.lines:
                    m = re.match(r"^ACCEPT\s+(?:\S*):(\d+)\s*$", ln)
                    if m:
                        self.port = int(m.group(1))
                        break
                    if accept and ln.strip() == "ACCEPT":   # a given port is not echoed
                        self.port = int(accept)
                        break
                if self.port is not None:
                    break
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    self.close()
                    raise AssertionError("openssl s_server did not start:\n" + "\n".join(self.lines))
                self._cond.wait(left)

    def _drain(self):
        for raw in iter(self.proc.stdout.readline, b""):
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_line(self, substr, timeout=5.0):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for ln in self.lines:
                    if substr in ln:
                        return ln
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    raise AssertionError("s_server never printed %r:\n%s"
                                         % (substr, "\n".join(self.lines)))
                self._cond.wait(left)

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._t.join(2)


def make_duplex_handler(send_seed, send_total, deadline_s=90.0):
    """BIO-mode handler: sends `send_total` deterministic bytes while hashing all
    it receives; once both its sending is done and close_notify has arrived,
    sends close_notify and closes. Returns (bytes_received, sha256_hex).
    Single-threaded select loop, so reading and writing really overlap."""
    def handler(bc):
        raw = bc.raw
        raw.setblocking(False)
        h = hashlib.sha256()
        got = 0
        gen = det_chunks(send_seed, send_total)
        outbuf = bytearray(bc.out.read())
        peer_done = sent_all = False
        deadline = time.monotonic() + deadline_s
        while not (peer_done and sent_all and not outbuf):
            if time.monotonic() > deadline:
                raise TimeoutError("duplex transfer: got %d bytes, peer_done=%s sent_all=%s"
                                   % (got, peer_done, sent_all))
            while not sent_all and len(outbuf) < (1 << 20):
                chunk = next(gen, None)
                if chunk is None:
                    sent_all = True
                    break
                for off in range(0, len(chunk), 16384):
                    bc.obj.write(chunk[off:off + 16384])
                outbuf += bc.out.read()
            r, w, _ = select.select([] if peer_done else [raw], [raw] if outbuf else [], [], 1.0)
            if w:
                try:
                    n = raw.send(outbuf)
                    del outbuf[:n]
                except BlockingIOError:
                    pass
            if r:
                try:
                    d = raw.recv(1 << 18)
                except BlockingIOError:
                    continue
                if not d:
                    raise BioConn.TruncatedError("TCP EOF without close_notify after %d bytes" % got)
                bc.inc.write(d)
                while True:
                    try:
                        x = bc.obj.read(1 << 18)
                    except ssl.SSLWantReadError:
                        break
                    except ssl.SSLZeroReturnError:
                        peer_done = True
                        break
                    if not x:
                        peer_done = True
                        break
                    h.update(x)
                    got += len(x)
                outbuf += bc.out.read()
        raw.settimeout(SOCK_TIMEOUT)
        bc.send_close_notify()
        return got, h.hexdigest()
    return handler


def wait_count(fwd, event, n, timeout=20.0, **fields):
    """Wait until at least n lines of `event` (with fields) exist; return them."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        found = fwd.find(event, **fields)
        if len(found) >= n:
            return found
        left = deadline - time.monotonic()
        if left <= 0 or fwd.proc.poll() is not None:
            raise AssertionError("only %d of %d event=%s lines; log tail:\n%s"
                                 % (len(found), n, event, fwd.log_text(20)))
        with fwd._cond:
            fwd._cond.wait(min(left, 0.5))


# ---------------------------------------------------------------------------
# systemd protocols: sd_notify, socket activation, journal, /proc
# ---------------------------------------------------------------------------

def with_listen_pid(cmd):
    """argv wrapper: run cmd through `sh -c` that sets LISTEN_PID to its own pid
    and execs cmd, so that LISTEN_PID is the pid of tlsfwd itself."""
    return ["/bin/sh", "-c", 'LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"'] + list(cmd)


def with_hosts(path):
    """argv wrapper factory: run cmd in its own mount namespace with the file
    at path over /etc/hosts (root only), so that a test decides what a name
    resolves to and in which order."""
    def wrap(cmd):
        return ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                'mount --bind "$0" /etc/hosts && exec "$@"', path] + list(cmd)
    return wrap


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


def listening_sockets(pid):
    """{port: socket inode} of the TCP sockets in LISTEN state that process pid holds."""
    inodes = set()
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            link = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        m = re.match(r"^socket:\[(\d+)\]$", link)
        if m:
            inodes.add(int(m.group(1)))
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fl = row.split()
            if fl[3] == "0A" and int(fl[9]) in inodes:
                out[int(fl[1].rsplit(":", 1)[1], 16)] = int(fl[9])
    return out


def proc_status(pid):
    """/proc/PID/status as {key: value string}."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


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
        _close(self.sock)
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


# ---------------------------------------------------------------------------
# TLS feature helpers (client certificates, pins, OCSP, -t checks)
# ---------------------------------------------------------------------------

HTTP_REQUEST = b"GET / HTTP/1.0\r\n\r\n"
CONFIG_ERROR_RE = re.compile(r"^(.+?):(\d+): (.+)$")


def www_fetch(sock):
    """HTTP/1.0 GET through tlsfwd to an `openssl s_server -www`; returns the page.
    The client then half-closes as HTTP/1.0 clients do."""
    sock.sendall(HTTP_REQUEST)
    page = recv_all(sock)
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    return page


def spki_pin(cert):
    """base64(SHA-256(DER SubjectPublicKeyInfo)) of a PEM certificate, computed with
    the openssl CLI as an operator would:
    openssl x509 -pubkey -noout | openssl pkey -pubin -outform DER | openssl dgst -sha256 -binary | base64"""
    def run(args, data):
        r = subprocess.run(args, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=30, check=True)
        return r.stdout
    pub = run(["openssl", "x509", "-in", cert, "-pubkey", "-noout"], b"")
    der = run(["openssl", "pkey", "-pubin", "-outform", "DER"], pub)
    dig = run(["openssl", "dgst", "-sha256", "-binary"], der)
    return run(["base64"], dig).decode().strip()


def cert_not_after(cert):
    """notAfter of a PEM certificate as an aware UTC datetime."""
    import datetime
    out = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-enddate"],
                         stdout=subprocess.PIPE, check=True, timeout=30).stdout.decode()
    text = out.strip().split("=", 1)[1].replace(" GMT", "")
    dt = datetime.datetime.strptime(" ".join(text.split()), "%b %d %H:%M:%S %Y")
    return dt.replace(tzinfo=datetime.timezone.utc)


def ini_line(text, section, key, nth=0):
    """1-based line number of the nth `key = ...` line of [section] in INI text."""
    cur = None
    seen = 0
    for i, ln in enumerate(text.split("\n"), 1):
        st = ln.strip()
        if st.startswith("[") and st.endswith("]"):
            cur = st[1:-1]
            continue
        if cur == section and "=" in st and st.split("=", 1)[0].strip() == key:
            if seen == nth:
                return i
            seen += 1
    raise KeyError("no %s line #%d in [%s]" % (key, nth, section))


def section_line(text, section):
    for i, ln in enumerate(text.split("\n"), 1):
        if ln.strip() == "[%s]" % section:
            return i
    raise KeyError(section)


def check_config(binary, path, timeout=15):
    """Run `tlsfwd -t -c path`; return (rc, [(file, line, message)], stderr text).
    Every non-empty stderr line that is not FILE:LINE: message is returned with
    file=None so that a test can see it."""
    r = run_tlsfwd(binary, ["-t", "-c", str(path)], timeout=timeout)
    err = r.stderr.decode("utf-8", "replace")
    out = []
    for ln in err.splitlines():
        if not ln.strip():
            continue
        m = CONFIG_ERROR_RE.match(ln)
        if m:
            out.append((m.group(1), int(m.group(2)), m.group(3)))
        else:
            out.append((None, 0, ln))
    return r.returncode, out, err


def assert_refused_through(fwd, sock):
    """The client of a refused handshake gets no upstream byte and a closed
    connection; returns (handshake record, close record)."""
    send_quiet(sock, HTTP_REQUEST)
    data, _how = recv_closed(sock)
    assert data == b"", "upstream bytes were relayed despite a refused handshake: %r" % data[:80]
    hs = fwd.conn_of(sock)
    cl = fwd.wait_close(hs["conn"])
    assert cl["reason"] == "handshake_failed", (hs, cl)
    assert num(cl["bytes_down"]) == 0, cl
    return hs, cl


def read_client_hello(conn, timeout=SOCK_TIMEOUT):
    """Read one TLS ClientHello from a raw socket; return {extension type: data}.
    Handles a ClientHello split over several records."""
    conn.settimeout(timeout)
    buf = bytearray()
    body = bytearray()

    def need(n):
        while len(buf) < n:
            d = conn.recv(65536)
            if not d:
                raise AssertionError("EOF inside the ClientHello")
            buf.extend(d)

    while True:
        need(5)
        if buf[0] != 22:
            raise AssertionError("not a handshake record: %r" % bytes(buf[:5]))
        ln = int.from_bytes(buf[3:5], "big")
        need(5 + ln)
        body += buf[5:5 + ln]
        del buf[:5 + ln]
        if len(body) >= 4 and len(body) >= 4 + int.from_bytes(body[1:4], "big"):
            break
    if body[0] != 1:
        raise AssertionError("not a ClientHello: type %d" % body[0])
    msg = bytes(body[4:4 + int.from_bytes(body[1:4], "big")])
    i = 2 + 32                                   # legacy_version, random
    i += 1 + msg[i]                              # session id
    i += 2 + int.from_bytes(msg[i:i + 2], "big")  # cipher suites
    i += 1 + msg[i]                              # compression methods
    exts = {}
    end = i + 2 + int.from_bytes(msg[i:i + 2], "big")
    i += 2
    while i < end:
        typ = int.from_bytes(msg[i:i + 2], "big")
        ln = int.from_bytes(msg[i + 2:i + 4], "big")
        exts[typ] = msg[i + 4:i + 4 + ln]
        i += 4 + ln
    return exts


EXT_STATUS_REQUEST = 5
EXT_ALPN = 16


def alpn_offered(exts):
    """The ALPN protocol names of a ClientHello (read_client_hello), in order, or None."""
    data = exts.get(EXT_ALPN)
    if data is None:
        return None
    out = []
    i = 2
    while i < len(data):
        n = data[i]
        out.append(data[i + 1:i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    return out


def echo_once(port, data=b"ping", timeout=5):
    """One connection through tlsfwd to an echo upstream: send, read it back,
    half-close, and see the clean end."""
    s = connect(port, timeout)
    try:
        s.sendall(data)
        assert recv_exact(s, len(data)) == data
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b""
    finally:
        s.close()


def line_of(text, section, key):
    """1-based line number of `key = ...` in [section] of a rendered INI."""
    lines = text.split("\n")
    start = lines.index("[%s]" % section)
    for i in range(start + 1, len(lines)):
        if lines[i].startswith("["):
            break
        if lines[i].split(" = ", 1)[0] == key:
            return i + 1
    raise KeyError((section, key))


# ---------------------------------------------------------------------------
# faults and resources: resets, stalls, memory, network namespaces
# ---------------------------------------------------------------------------

def reset_close(sock):
    """Close with SO_LINGER 0: the peer gets a TCP RST instead of a FIN."""
    import struct
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def rss_kib(pid):
    """VmRSS of process pid in KiB (0 if it has none)."""
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    return 0


def wait_stalled(counter, total, quiet=0.3, timeout=20.0):
    """Poll a progress counter until it stops moving for `quiet` seconds (the
    sleeps prove that nothing moves any more); return its value."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while True:
        cur = counter()
        now = time.monotonic()
        if cur != last:
            last, since = cur, now
        elif now - since >= quiet or cur >= total:
            return cur
        assert now < deadline, "transfer never stalled (at %d bytes)" % cur
        time.sleep(0.05)


def exchange_ok(fwd, service="svc", data=b"ping", dial=None):
    """One healthy connection through the running tlsfwd `fwd` to an echo
    upstream: send `data`, get exactly it back, half-close, see the clean end;
    and its log lines say result=ok and reason=done with the byte counts.
    dial: function(port) -> connected socket (default: connect() on 127.0.0.1).
    Returns (handshake record, close record)."""
    s = (dial or connect)(fwd.ports[service])
    try:
        s.sendall(data)
        got = recv_exact(s, len(data))
        assert got == data, "echo differs from the %d bytes sent" % len(data)
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b""
        hs = fwd.conn_of(s)
    finally:
        s.close()
    cl = fwd.wait_close(hs["conn"])
    assert hs["result"] == "ok" and hs["service"] == service, hs
    assert cl["reason"] == "done", cl
    assert (num(cl["bytes_up"]), num(cl["bytes_down"])) == (len(data), len(data)), cl
    return hs, cl


class NetNs:
    """A throw-away network namespace (`ip netns add`, needs root) with lo up
    and a black hole: TCP SYNs to BLACKHOLE (TEST-NET-1) leave through a veth
    whose peer, in the same namespace, has no address and does not forward,
    so they get no answer at all (no RST, no ICMP): connect() just hangs.

    wrap(cmd): argv wrapper running cmd inside (`ip netns exec`).
    call(fn, *args): fn(*args) in a thread that joined the namespace, so the
    sockets fn creates (listeners, clients) live in it; returns fn's result."""

    BLACKHOLE = "192.0.2.1"
    _count = 0

    def __init__(self):
        NetNs._count += 1
        self.name = "tlsfwd-test-%d-%d" % (os.getpid(), NetNs._count)
        self._ip("netns", "add", self.name)
        try:
            n = ["-n", self.name]
            self._ip(*n, "link", "set", "lo", "up")
            self._ip(*n, "link", "add", "bh0", "type", "veth", "peer", "name", "bh1")
            self._ip(*n, "link", "set", "bh0", "up")
            self._ip(*n, "link", "set", "bh1", "up")
            self._ip(*n, "addr", "add", "198.51.100.1/24", "dev", "bh0")
            mac = self._ip(*n, "-br", "link", "show", "bh1").split()[2]
            self._ip(*n, "neigh", "add", self.BLACKHOLE, "lladdr", mac, "dev", "bh0",
                     "nud", "permanent")
            self._ip(*n, "route", "add", self.BLACKHOLE + "/32", "dev", "bh0")
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _ip(*args):
        r = subprocess.run(["ip"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=30)
        if r.returncode != 0:
            raise OSError("ip %s: %s" % (" ".join(args), r.stderr.decode(errors="replace").strip()))
        return r.stdout.decode()

    def wrap(self, cmd):
        return ["ip", "netns", "exec", self.name] + list(cmd)

    def call(self, fn, *args):
        import ctypes
        box = {}

        def run():
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                fd = os.open("/run/netns/" + self.name, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    if libc.setns(fd, 0x40000000) != 0:          # CLONE_NEWNET
                        err = ctypes.get_errno()
                        raise OSError(err, "setns: " + os.strerror(err))
                finally:
                    os.close(fd)
                box["result"] = fn(*args)
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller
                box["error"] = e
        t = threading.Thread(target=run, name="netns-" + self.name, daemon=True)
        t.start()
        t.join(30)
        if "error" in box:
            raise box["error"]
        return box["result"]

    def close(self):
        subprocess.run(["ip", "netns", "del", self.name], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=30)


class StreamSource:
    """BIO-mode upstream handler (ssl_upstream(..., mode="bio")) that streams
    `total` bytes of det_chunks(seed) in `step`-byte writes, counting in
    self.sent what it handed to the socket, then sends close_notify. Returns
    "sent all", or "stopped" when the peer went away first."""

    def __init__(self, seed, total, step=1 << 16):
        self.seed, self.total, self.step = seed, total, step
        self.sent = 0

    def __call__(self, bc):
        try:
            for chunk in det_chunks(self.seed, self.total):
                for off in range(0, len(chunk), self.step):
                    bc.send(chunk[off:off + self.step])
                    self.sent += len(chunk[off:off + self.step])
            bc.send_close_notify()
        except (OSError, BioConn.TruncatedError):
            return "stopped"
        return "sent all"
