"""Running tlsfwd: Tlsfwd (one daemon, its stderr drained into parsed log
records, with waits on them and the teardown checks), run_tlsfwd() and
check_config() for short runs (-t/-V/-h), wait_count(), and the child
environment without systemd's protocol variables."""

import os
import re
import signal
import subprocess
import threading
import time

from harness.config import render_ini
from harness.logfmt import LEVELS, TS_RE, parse_line
from harness.wrapper import SANITIZER_MARKERS, SLOW, wrap_command, wrapper_problems


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


CONFIG_ERROR_RE = re.compile(r"^(.+?):(\d+): (.+)$")


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
