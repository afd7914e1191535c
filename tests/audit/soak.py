#!/usr/bin/env python3
"""tlsfwd soak: minutes of mixed load on one tlsfwd, sampled every second.

    python3 tests/audit/soak.py --tlsfwd build/soak/tlsfwd [--seconds 600]
    make soak [SOAK_SECONDS=600]

The set-up is bench/bench.py's (imported, not copied): a throw-away CA and
certificate made at run time, one nginx upstream serving tiny.txt and a
SIZE MiB file over HTTPS. tlsfwd (workers = 1, log_level = info) runs:

    good      nginx, verified, session resumption     -> result=ok
    fresh     nginx, session_cache = no               -> result=ok (full handshakes)
    refused   a port nobody listens on                -> result=fail stage=connect
    badname   nginx, verify_hostname = wrong.example  -> result=fail stage=verify
    silent    accepts and never answers, 1 s handshake_timeout
                                                      -> result=fail stage=timeout

The run is rounds of one minute, all alike. For the first 40 s: wrk
keep-alive on good; wrk new connections on good and fresh (rates bounded by
a wrk delay script); curl GET and PUT of the big file, one after the other;
50 idle keep-alive connections held (closed at 40 s, half of them by RST);
clients of the three failing services; clients that reset right after
connecting or in the middle of a download; a SIGHUP at 30 s (same file) that
must log event=reload result=ok. Then 20 s of quiet, at whose end every
connection is gone: that last sample of the round is its "quiet" point.

Each second: tlsfwd's RSS (VmRSS), open descriptors (/proc/PID/fd) and CPU %
(utime + stime) go to OUT/soak.csv. At the end: RESULTS/soak.png (gnuplot)
and RESULTS/soak.md (summary, connection counts by result from tlsfwd's
log). Exit status 1 when tlsfwd died or did not exit 0 on SIGTERM, logged
a line that is not logfmt or one at level=error, a handshake ended unlike
its service's row above, a client of good or fresh saw an error, or the
drift between the quiet points of the first and the last minute is beyond
the bounds: descriptors equal, RSS at most RSS_DRIFT_KIB or RSS_DRIFT_PCT
(whichever is larger) higher.
"""

import argparse
import collections
import datetime
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import bench  # noqa: E402

ROUND = 60              # seconds per round
LOAD = 40               # load for the first LOAD seconds of a round
RELOAD_AT = 30          # SIGHUP this far into a round
IDLE_CONNS = 50
RSS_DRIFT_KIB = 2048
RSS_DRIFT_PCT = 10

SERVICES = ("good", "fresh", "refused", "badname", "silent")
# service -> what every handshake line of it must say
EXPECT = {
    "good": {"result": "ok"},
    "fresh": {"result": "ok", "resumed": "no"},
    "refused": {"result": "fail", "stage": "connect"},
    "badname": {"result": "fail", "stage": "verify"},
    "silent": {"result": "fail", "stage": "timeout"},
}
GOOD = ("good", "fresh")

LOGFMT_PAIR = re.compile(r'([A-Za-z0-9_.-]+)=("(?:[^"\\]|\\.)*"|[^ ]+)')


def log(msg):
    bench.log("soak: " + msg)


def logfmt(line):
    """Fast enough for 100 000s of lines: key -> raw value (quotes dropped), or
    None when the line is not `ts=... level=... event=...` pairs."""
    if not line.startswith("ts="):
        return None
    pairs = LOGFMT_PAIR.findall(line)
    if " ".join("%s=%s" % kv for kv in pairs) != line:
        return None
    return {k: v[1:-1] if v.startswith('"') else v for k, v in pairs}


class Tlsfwd:
    """tlsfwd with its stderr drained into OUT/tlsfwd.log, counted as it comes."""

    def __init__(self, binary, conf, logpath):
        self.counts = collections.Counter()     # (event, service, key=value...) -> n
        self.unexpected = collections.Counter()
        self.bad_lines = []                     # not logfmt, or level=error
        self.listen = {}
        self.reloads = []
        self._cond = threading.Condition()
        self._log = open(logpath, "w")
        self.proc = subprocess.Popen([binary, "-c", conf], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        bench.PROCS.append(self.proc)       # bench.cleanup() stops it on any exit
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self):
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self._log.write(line + "\n")
            r = logfmt(line)
            with self._cond:
                if r is None or r.get("level") == "error":
                    self.bad_lines.append(line)
                else:
                    self._count(r)
                self._cond.notify_all()
        self._log.close()

    def _count(self, r):
        ev, svc = r.get("event"), r.get("service", "-")
        if ev == "handshake":
            self.counts[(ev, svc, "result=" + r["result"] + (
                " stage=" + r["stage"] if "stage" in r else ""))] += 1
            want = EXPECT.get(svc, {})
            if any(r.get(k) != v for k, v in want.items()):
                self.unexpected[(svc, r.get("result"), r.get("stage", "-"),
                                 r.get("error", "-")[:80])] += 1
        elif ev == "close":
            self.counts[(ev, svc, "reason=" + r["reason"])] += 1
        elif ev == "listening":
            self.listen[svc] = int(r["listen"].rsplit(":", 1)[1])
        elif ev == "reload":
            self.reloads.append(r.get("result"))
        elif ev in ("ready", "exit"):
            self.counts[(ev, "-", "")] += 1

    def wait(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        with self._cond:
            while not pred():
                left = deadline - time.monotonic()
                if self.proc.poll() is not None:
                    bench.die("tlsfwd exited (rc=%s) before %s" % (self.proc.returncode, what))
                if left <= 0:
                    bench.die("timed out after %ds waiting for %s" % (timeout, what))
                self._cond.wait(min(left, 1.0))

    def stop(self):
        """SIGTERM; the exit code (None if it had to be killed)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            rc = None
        bench.stop(self.proc)
        self._thread.join(10)
        return rc


# ------------------------------------------------------------------ the upstreams

class Silent:
    """Accepts and never answers (reads until the peer closes)."""

    def __init__(self):
        import selectors
        self.sel = selectors.DefaultSelector()
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(256)
        self.port = self.ls.getsockname()[1]
        self.sel.register(self.ls, selectors.EVENT_READ)
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        import selectors
        while True:
            for key, _ in self.sel.select():
                s = key.fileobj
                if s is self.ls:
                    c, _ = s.accept()
                    self.sel.register(c, selectors.EVENT_READ)
                    continue
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self.sel.unregister(s)
                    s.close()


# ------------------------------------------------------------------ clients

REQ_TINY = b"GET /tiny.txt HTTP/1.1\r\nHost: localhost\r\n\r\n"
REQ_BIG = b"GET /big.bin HTTP/1.0\r\nHost: localhost\r\n\r\n"


def connect(port, timeout=10):
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def reset(s):
    """Close with an RST (SO_LINGER 0)."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()


def get_tiny(s):
    """One keep-alive GET /tiny.txt on s; raises unless 200 with its body."""
    s.sendall(REQ_TINY)
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(4096)
        if not d:
            raise OSError("closed before the response head")
        buf += d
    head, body = buf.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 200"):
        raise OSError("status %r" % head[:30])
    n = int(re.search(rb"(?im)^content-length:\s*(\d+)", head).group(1))
    while len(body) < n:
        d = s.recv(4096)
        if not d:
            raise OSError("closed mid-body")
        body += d


def read_to_close(s):
    data = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                return data
            data += d
    except ConnectionResetError:
        return data


class Soak:
    def __init__(self, a, tmp):
        self.a = a
        self.tmp = tmp
        self.lock = threading.Lock()
        self.clients = collections.Counter()    # what the clients did
        self.errors = collections.Counter()     # good-path client errors
        self.fail_odd = collections.Counter()   # failing-service clients that got bytes
        self.samples = []

    def note(self, key, n=1, error=None, odd=None):
        with self.lock:
            self.clients[key] += n
            if error:
                self.errors["%s: %s" % (key, error[:120])] += 1
            if odd:
                self.fail_odd["%s: %s" % (key, odd[:120])] += 1

    # -- set-up
    def setup(self):
        a, tmp = self.a, self.tmp
        log("PKI, a %d MiB file, nginx upstream" % a.size_mib)
        bench.make_pki(os.path.join(tmp, "pki"))
        bench.make_files(tmp, a.size_mib)
        self.ca = os.path.join(tmp, "pki", "ca.pem")
        self.big = os.path.join(tmp, "www", "big.bin")
        self.size = a.size_mib << 20
        self.upstream, _plain, self.tls_port = bench.start_upstream(tmp, self.ca, 16384, 4096,
                                                                    None)
        self.silent = Silent()
        self.scripts = {}
        for ms in (5, 20, 50):
            path = os.path.join(tmp, "delay%d.lua" % ms)
            with open(path, "w") as f:
                f.write("function delay()\n  return %d\nend\n" % ms)
            self.scripts[ms] = path
        conf = os.path.join(tmp, "soak.ini")
        nginx = "127.0.0.1:%d" % self.tls_port
        svc = {
            "good": (nginx, "sni = localhost\nverify_hostname = localhost\n"),
            "fresh": (nginx, "sni = localhost\nverify_hostname = localhost\n"
                             "session_cache = no\n"),
            "refused": ("127.0.0.1:%d" % bench.free_port(), ""),
            "badname": (nginx, "sni = localhost\nverify_hostname = wrong.example\n"),
            "silent": ("127.0.0.1:%d" % self.silent.port, "handshake_timeout = 1s\n"),
        }
        with open(conf, "w") as f:
            f.write("[global]\nlog_level = info\nshutdown_timeout = 5s\n")
            for name in SERVICES:
                up, extra = svc[name]
                f.write("\n[%s]\nlisten = 127.0.0.1:0\nupstream = %s\nca_file = %s\n"
                        "connect_timeout = 2s\nidle_timeout = 50s\n%s"
                        % (name, up, self.ca, extra))
        os.makedirs(a.out, exist_ok=True)
        self.fwd = Tlsfwd(a.tlsfwd, conf, os.path.join(a.out, "tlsfwd.log"))
        self.fwd.wait(lambda: self.fwd.counts[("ready", "-", "")], 30, "event=ready")
        self.port = self.fwd.listen
        log("tlsfwd pid %d: %s" % (self.fwd.proc.pid, ", ".join(
            "%s=%d" % (s, self.port[s]) for s in SERVICES)))

    # -- load, one round
    def until(self, t_end, period, fn, *args):
        """fn(*args) every `period` seconds until t_end (a paced, bounded loop)."""
        nxt = time.monotonic()
        while time.monotonic() < t_end:
            fn(*args)
            nxt += period
            time.sleep(max(0.0, nxt - time.monotonic()))

    def wrk(self, service, conns, close, delay_ms, seconds):
        key = "wrk %s %s" % ("new-conn" if close else "keep-alive", service)
        res = bench.wrk("http://127.0.0.1:%d/tiny.txt" % self.port[service], seconds, conns,
                        close, ["-s", self.scripts[delay_ms]])
        self.note(key, res.get("requests") or 0)
        for e in bench.wrk_problems(res):
            self.note(key, 0, error=e)

    def bulk(self, t_end):
        base = "http://127.0.0.1:%d" % self.port["good"]
        while time.monotonic() < t_end:
            _v, err = bench.curl_get(base + "/big.bin", self.size)
            self.note("bulk GET", error=err)
            _v, err = bench.curl_put(base + "/upload/soak", self.big, self.size)
            self.note("bulk PUT", error=err)
            time.sleep(1.0)

    def refused_client(self, service):
        try:
            s = connect(self.port[service])
            s.sendall(REQ_TINY)
            data = read_to_close(s)
            s.close()
        except OSError as e:
            self.note("fail " + service, odd="client: %s" % e)
            return
        self.note("fail " + service, odd=("got %d bytes" % len(data)) if data else None)

    def reset_early(self):
        try:
            reset(connect(self.port["good"]))
            self.note("reset at connect")
        except OSError as e:
            self.note("reset at connect", error=str(e))

    def reset_mid(self):
        try:
            s = connect(self.port["good"])
            s.sendall(REQ_BIG)
            got = 0
            while got < 256 << 10:
                d = s.recv(65536)
                if not d:
                    raise OSError("closed after %d bytes" % got)
                got += len(d)
            reset(s)
            self.note("reset mid-download")
        except OSError as e:
            self.note("reset mid-download", error=str(e))

    def idle_open(self):
        conns = []
        for _ in range(IDLE_CONNS):
            try:
                s = connect(self.port["good"])
                get_tiny(s)
                conns.append(s)
            except OSError as e:
                self.note("idle keep-alive", 0, error=str(e))
        self.note("idle keep-alive", len(conns))
        return conns

    def idle_close(self, conns):
        for i, s in enumerate(conns):
            try:
                get_tiny(s)        # still served after up to 40 s idle
            except OSError as e:
                self.note("idle keep-alive", 0, error="second request: %s" % e)
            if i % 2:
                reset(s)
            else:
                s.close()

    def reload(self):
        n = len(self.fwd.reloads)
        self.fwd.proc.send_signal(signal.SIGHUP)
        self.fwd.wait(lambda: len(self.fwd.reloads) > n, 30, "event=reload")
        self.note("reload", error=None if self.fwd.reloads[-1] == "ok" else "reload failed")

    def round(self, t0):
        end = t0 + LOAD
        jobs = [
            (self.wrk, "good", 8, False, 5, LOAD),
            (self.wrk, "good", 4, True, 20, LOAD),
            (self.wrk, "fresh", 2, True, 50, LOAD),
            (self.bulk, end - 5),
            (self.until, end, 0.2, self.refused_client, "refused"),
            (self.until, end, 0.2, self.refused_client, "badname"),
            (self.until, end, 0.5, self.refused_client, "silent"),
            (self.until, end, 0.5, self.refused_client, "silent"),
            (self.until, end, 0.2, self.reset_early),
            (self.until, end, 0.5, self.reset_mid),
        ]
        threads = [threading.Thread(target=j[0], args=j[1:], daemon=True) for j in jobs]
        for t in threads:
            t.start()
        idle = self.idle_open()
        time.sleep(max(0.0, t0 + RELOAD_AT - time.monotonic()))
        self.reload()
        time.sleep(max(0.0, end - time.monotonic()))
        self.idle_close(idle)
        for t in threads:
            t.join(max(1.0, t0 + ROUND - 10 - time.monotonic()))
            if t.is_alive():
                self.note("hung client", error="a client thread still ran 50 s into the round")

    # -- sampling
    def measure(self):
        """(RSS KiB, open descriptors, CPU seconds) of tlsfwd; OSError once it is gone."""
        pid = self.fwd.proc.pid
        with open("/proc/%d/status" % pid) as st:
            m = re.search(r"^VmRSS:\s+(\d+)", st.read(), re.M)
        if m is None:
            raise OSError("pid %d has no VmRSS (a zombie)" % pid)
        fds = len(os.listdir("/proc/%d/fd" % pid))
        with open("/proc/%d/stat" % pid) as st:
            fields = st.read().rsplit(")", 1)[1].split()
        return int(m.group(1)), fds, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def sampler(self, t_start, stop, out):
        prev = None
        nxt = t_start
        with open(out, "w") as f:
            f.write("t_s,rss_kib,fds,cpu_pct,phase\n")
            while not stop.is_set():
                now = time.monotonic()
                try:
                    rss, fds, cpu = self.measure()
                except OSError:
                    break                               # tlsfwd is gone: the run fails
                pct = 0.0 if prev is None else 100.0 * (cpu - prev[1]) / (now - prev[0])
                prev = (now, cpu)
                t = now - t_start
                phase = "load" if (t % ROUND) < LOAD + 2 else "quiet"
                self.samples.append((t, rss, fds, pct, phase))
                f.write("%.1f,%d,%d,%.1f,%s\n" % (t, rss, fds, pct, phase))
                f.flush()
                nxt += 1.0
                stop.wait(max(0.0, nxt - time.monotonic()))

    def run(self):
        rounds = self.a.seconds // ROUND
        stop = threading.Event()
        self.baseline = self.measure()          # before any load
        t_start = time.monotonic()
        sampler = threading.Thread(target=self.sampler, daemon=True,
                                   args=(t_start, stop, os.path.join(self.a.out, "soak.csv")))
        sampler.start()
        self.quiet = []
        for i in range(rounds):
            t0 = t_start + i * ROUND
            self.round(t0)
            if self.fwd.proc.poll() is not None:
                break
            # The round's quiet point: its last second, every connection gone.
            time.sleep(max(0.0, t0 + ROUND - 1.5 - time.monotonic()))
            s = self.samples[-1]
            self.quiet.append(s)
            log("round %d/%d: quiet RSS %d KiB, %d fds; %d handshakes so far"
                % (i + 1, rounds, s[1], s[2], sum(v for k, v in self.fwd.counts.items()
                                                  if k[0] == "handshake")))
            time.sleep(max(0.0, t0 + ROUND - time.monotonic()))
        stop.set()
        sampler.join(5)
        self.alive_at_end = self.fwd.proc.poll() is None
        self.rc = self.fwd.stop()

    # -- verdict and report
    def verdict(self):
        fails = []
        fwd = self.fwd
        if not self.alive_at_end:
            fails.append("tlsfwd died during the run (rc=%s)" % fwd.proc.returncode)
        elif self.rc != 0:
            fails.append("tlsfwd exited with rc=%s after SIGTERM (want 0)" % self.rc)
        if fwd.bad_lines:
            fails.append("%d log lines not logfmt or at level=error, first: %r"
                         % (len(fwd.bad_lines), fwd.bad_lines[0][:300]))
        if fwd.unexpected:
            fails.append("handshakes unlike their service's row: %s" % dict(fwd.unexpected))
        if any(r != "ok" for r in fwd.reloads):
            fails.append("reloads: %s" % fwd.reloads)
        if self.errors:
            fails.append("client errors on the good path: %s" % dict(self.errors))
        if self.fail_odd:
            fails.append("clients of the failing services: %s" % dict(self.fail_odd))
        if len(self.quiet) >= 2:
            first, last = self.quiet[0], self.quiet[-1]
            rss_bound = max(RSS_DRIFT_KIB, first[1] * RSS_DRIFT_PCT / 100.0)
            if last[1] - first[1] > rss_bound:
                fails.append("RSS drift %+d KiB between the first and last quiet point "
                             "(bound %d KiB)" % (last[1] - first[1], rss_bound))
            if last[2] != first[2]:
                fails.append("descriptor drift %+d between the first and last quiet point "
                             "(bound 0)" % (last[2] - first[2]))
        else:
            fails.append("fewer than two rounds completed")
        return fails

    def plot(self, csv, png):
        gp = os.path.join(self.a.out, "soak.gp")
        with open(gp, "w") as f:
            f.write("""set terminal pngcairo size 1100,900 font ",10"
set output '%(png)s'
set datafile separator ','
set key outside right top vertical Left reverse
set grid
set multiplot layout 3,1 title "tlsfwd soak: %(title)s"
set lmargin 12
set rmargin 16
set xrange [0:%(xmax)g]
unset xlabel
set ylabel 'RSS (MiB)'
set yrange [0:*]
plot '%(csv)s' using ($1/60):($2/1024) every ::1 with lines lw 1.5 title 'RSS', \\
     '%(csv)s' using ($1/60):(strcol(5) eq 'quiet' ? $2/1024 : 1/0) every ::1 \\
       with points pt 7 ps 0.4 title 'quiet'
set ylabel 'open descriptors'
plot '%(csv)s' using ($1/60):3 every ::1 with lines lw 1.5 title 'fds', \\
     '%(csv)s' using ($1/60):(strcol(5) eq 'quiet' ? $3 : 1/0) every ::1 \\
       with points pt 7 ps 0.4 title 'quiet'
set ylabel 'CPU (%% of one core)'
set xlabel 'minutes'
plot '%(csv)s' using ($1/60):4 every ::1 with lines lw 1 title 'CPU'
unset multiplot
""" % {"png": png, "csv": csv, "xmax": self.a.seconds / 60.0,
       "title": "%d min of mixed load, one sample per second" % (self.a.seconds // 60)})
        bench.run(["gnuplot", gp])

    def report(self, fails, path, png):
        s = self.samples
        rss = [x[1] for x in s]
        fds = [x[2] for x in s]
        cpu = [x[3] for x in s[1:]]
        cpu_load = [x[3] for x in s[1:] if x[4] == "load"]
        first, last = (self.quiet[0], self.quiet[-1]) if self.quiet else (s[0], s[-1])
        minute = [x for x in s if x[0] < ROUND]
        last_minute = [x for x in s if x[0] >= s[-1][0] - ROUND]
        c = self.fwd.counts
        v = bench.versions(self.a.tlsfwd)
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        out = ["# tlsfwd soak, %s" % now, "",
               "`make soak` (tests/audit/soak.py): %d s, %d rounds of %d s (load %d s, then "
               "quiet), on %d CPUs, %s, gnutls %s. One tlsfwd, workers = 1, log_level = info."
               % (self.a.seconds, len(self.quiet), ROUND, LOAD, os.cpu_count(), v["tlsfwd"],
                  v["gnutls"]), "",
               "**Result: %s**" % ("PASS" if not fails else "FAIL"), ""]
        out += ["- %s" % f for f in fails] + ([""] if fails else [])
        out += ["| | start | first quiet point | last quiet point | drift | max |",
                "|---|---|---|---|---|---|",
                "| RSS (KiB) | %d | %d | %d | %+d (bound %d) | %d |"
                % (self.baseline[0], first[1], last[1], last[1] - first[1],
                   max(RSS_DRIFT_KIB, first[1] * RSS_DRIFT_PCT / 100.0), max(rss)),
                "| open descriptors | %d | %d | %d | %+d (bound 0) | %d |"
                % (self.baseline[1], first[2], last[2], last[2] - first[2], max(fds)),
                "",
                "CPU: mean %.1f%% of one core over the run, %.1f%% over the load phases, "
                "max %.0f%%. Mean RSS %d KiB in the first minute, %d KiB in the last; "
                "mean descriptors %.0f and %.0f."
                % (sum(cpu) / max(1, len(cpu)), sum(cpu_load) / max(1, len(cpu_load)),
                   max(cpu or [0]), sum(x[1] for x in minute) / max(1, len(minute)),
                   sum(x[1] for x in last_minute) / max(1, len(last_minute)),
                   sum(x[2] for x in minute) / max(1, len(minute)),
                   sum(x[2] for x in last_minute) / max(1, len(last_minute))), "",
                "Connections by result (tlsfwd's log):", "",
                "| service | handshakes | by result | closes by reason |",
                "|---|---|---|---|"]
        for svc in SERVICES:
            hs = sorted((k[2], n) for k, n in c.items() if k[0] == "handshake" and k[1] == svc)
            cl = sorted((k[2], n) for k, n in c.items() if k[0] == "close" and k[1] == svc)
            out.append("| %s | %d | %s | %s |" % (
                svc, sum(n for _k, n in hs), ", ".join("%s: %d" % kv for kv in hs),
                ", ".join("%s: %d" % kv for kv in cl)))
        out += ["", "Reloads: %d (%s). Clients:" % (
            len(self.fwd.reloads), ", ".join(sorted(set(self.fwd.reloads))) or "-"), ""]
        for k in sorted(self.clients):
            out.append("- %s: %d" % (k, self.clients[k]))
        errs = dict(self.errors)
        errs.update(self.fail_odd)
        out += ["", "Client errors: %s" % (", ".join("%s x%d" % kv for kv in errs.items())
                                           or "none"), "",
                "Samples: `%s` (t_s, rss_kib, fds, cpu_pct, phase), tlsfwd's log: `%s`."
                % (os.path.relpath(os.path.join(self.a.out, "soak.csv"), ROOT),
                   os.path.relpath(os.path.join(self.a.out, "tlsfwd.log"), ROOT)), "",
                "![soak](%s)" % os.path.basename(png), ""]
        with open(path, "w") as f:
            f.write("\n".join(out))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tlsfwd", default=os.environ.get("TLSFWD")
                   or os.path.join(ROOT, "build", "tlsfwd"))
    p.add_argument("--seconds", type=int, default=int(os.environ.get("SOAK_SECONDS", "600")),
                   help="run length, a multiple of %d, at least %d" % (ROUND, 2 * ROUND))
    p.add_argument("--size-mib", type=int, default=32, help="the bulk file (default 32)")
    p.add_argument("--out", default=os.path.join(ROOT, "build", "soak"),
                   help="soak.csv, tlsfwd.log, soak.gp (default build/soak)")
    p.add_argument("--results", default=os.path.join(ROOT, "bench", "results"),
                   help="soak.png and soak.md (default bench/results)")
    a = p.parse_args()
    if a.seconds < 2 * ROUND or a.seconds % ROUND:
        p.error("--seconds must be a multiple of %d and at least %d" % (ROUND, 2 * ROUND))
    a.tlsfwd = os.path.abspath(a.tlsfwd)
    return a


def main():
    a = parse_args()
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, bench.on_signal)
    if not os.access(a.tlsfwd, os.X_OK):
        bench.die("%s is not built" % a.tlsfwd)
    bench.raise_nofile(65536)
    tmp = bench.pick_tmp(a.size_mib)
    bench.STATE["tmp"] = tmp
    soak = Soak(a, tmp)
    soak.setup()
    log("%d s of load, samples in %s" % (a.seconds, os.path.relpath(a.out, os.getcwd())))
    soak.run()
    fails = soak.verdict()
    os.makedirs(a.results, exist_ok=True)
    png = os.path.join(a.results, "soak.png")
    md = os.path.join(a.results, "soak.md")
    soak.plot(os.path.join(a.out, "soak.csv"), png)
    soak.report(fails, md, png)
    with open(md) as f:
        print(f.read())
    for f in fails:
        log("FAIL: " + f)
    log("wrote %s and %s" % (os.path.relpath(md, os.getcwd()), os.path.relpath(png, os.getcwd())))
    return 1 if fails else 0


if __name__ == "__main__":
    try:
        rc = main()
    finally:
        bench.cleanup()
    sys.exit(rc)
