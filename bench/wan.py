#!/usr/bin/env python3
"""tlsfwd over a real round trip: time to first byte of a new connection.

    python3 bench/wan.py [--rtt-ms 20] [options]        (or: make bench-wan; root)

Two network namespaces, "near" and "far", joined by bench/delayline (a TUN
device in each, every packet held for half the RTT each way), addresses from
the benchmarking range 198.18.0.0/15; no traffic leaves them. The upstream
nginx (HTTPS with a throw-away CA made for this run) runs in the far one;
each proxy and the client run in the near one, the proxy pointed at the
upstream through the line. For every row the client measures, from its
connect() to the first byte of the answer to a small GET, COUNT sequential
new connections (one every --interval-ms, after --warmup more) and COUNT
requests over one open keep-alive connection (the 1-RTT baseline). Every
proxy verifies the upstream's chain and name with TLS 1.2 and 1.3 allowed,
and is first started once expecting a wrong name, which it must refuse.

Rows: direct plain HTTP (TCP and the request: 2 RTT), direct HTTPS (the
client does TLS itself), tlsfwd with pool = 0 and pool = N (a row "n/a" when
`tlsfwd -t` refuses the key), stunnel4, haproxy, nginx stream and socat.
Then a burst: BURST clients at once on tlsfwd with pool = N (and pool = 0
to compare): their time to first byte, errors, how many the pool served
and how long it took to refill.

The line's RTT is measured (median TCP connect time across it, jitter as
its standard deviation) and every time is also given in units of it. The
report goes to stdout and bench/results/wan.md, every sample to
bench/results/wan.json. Exit status 1 when a tlsfwd row had an error.
Namespaces, devices and processes are removed on every exit (and those a
killed run left behind, at the next start).

    --rtt-ms MS       BENCH_WAN_RTT_MS    round trip of the line (20)
    --count N         BENCH_WAN_COUNT     samples per row and mode (30)
    --warmup N                            new connections before those (3)
    --interval-ms MS                      one new connection every MS (100)
    --pool N                              the pool row's pool (4)
    --burst N                             clients of the burst (32)
    --only A,B        BENCH_WAN_ONLY      only these rows (see --list)
    --quick                               10 samples, burst 16 (smoke run)
    --keep                                keep the temp dir (configs, logs)
    --cc NAME                             TCP congestion control on the line
                                          (cubic; 'host': the host's own)
(--help lists the rest: the binaries' paths, --no-realtime, --out.)

Congestion control: a new namespace takes the host's default, and where that
is BBR (as on the machine this was written on) its pacing of an app-limited
connection added 10-20 ms to most keep-alive requests after a few seconds.
The line's routes set Debian's default, cubic, at both ends (`ip route ...
congctl lock cubic`: a namespace may not change its own default to an
algorithm the host has not allowed).
"""

import argparse
import glob
import os
import re
import signal
import socket
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import bench  # noqa: E402
from bench import fmt, log  # noqa: E402
from harness.namespaces import NetNs, setns  # noqa: E402

NS_PREFIX = "tlsfwd-wan"
TMP_PREFIX = "tlsfwd-bench-wan."       # then the pid, a dot, mkdtemp's letters
NEAR_ADDR, FAR_ADDR = "198.18.0.1", "198.18.0.2"   # RFC 2544 benchmarking range
NET = "198.18.0.0/24"
UP_NAME = "upstream.wan.test"
ACCESS_LOG = ("log_format wan '$ssl_protocol $ssl_session_reused'; "
              "access_log @DIR@/access.log wan;")

ROWS = [
    ("direct-plain", "direct, plain HTTP (no TLS, no proxy)"),
    ("direct-tls", "direct HTTPS (the client does TLS, no proxy)"),
    ("tlsfwd", "tlsfwd, pool = 0"),
    ("tlsfwd-pool", "tlsfwd, pool = %d"),
    ("stunnel", "stunnel4"),
    ("haproxy", "haproxy"),
    ("nginx-stream", "nginx stream"),
    ("socat", "socat"),
]
BURST_ROWS = ["tlsfwd-pool", "tlsfwd"]


# ---------------------------------------------------------------- the line

def alive(pid):
    """Whether process pid runs (a zombie does not)."""
    try:
        with open("/proc/%s/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def stale_leftovers():
    """What a run of this benchmark killed before its clean-up (SIGKILL)
    left: its namespaces, with whatever still runs in them (its peers got
    SIGKILL with it, but not their children, such as nginx's worker), and its
    temp dir. Removed; returns their names."""
    gone = []
    for d in glob.glob(os.path.join(tempfile.gettempdir(), TMP_PREFIX + "*.*")):
        pid = os.path.basename(d)[len(TMP_PREFIX):].split(".")[0]
        if pid.isdigit() and not alive(pid):
            shutil.rmtree(d, ignore_errors=True)
            gone.append(d)
    r = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE, text=True,
                       stderr=subprocess.DEVNULL, timeout=30)
    for line in r.stdout.splitlines():
        m = re.match(r"(%s-(?:near|far)-(\d+)-\d+)\b" % NS_PREFIX, line)
        if not m or alive(m.group(2)):
            continue
        pids = subprocess.run(["ip", "netns", "pids", m.group(1)], stdout=subprocess.PIPE,
                              text=True, stderr=subprocess.DEVNULL, timeout=30).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["ip", "netns", "del", m.group(1)], stderr=subprocess.DEVNULL, timeout=30)
        gone.append(m.group(1))
    return gone


class DelayLine:
    """Two fresh namespaces (near, far) joined by the delay line: TUN device
    wan0 (NEAR_ADDR) in near, wan1 (FAR_ADDR) in far, one_way_ms each way,
    TCP congestion control `cc` in both (a new namespace takes the host's).
    close() stops the line (its devices go with it) and deletes both."""

    def __init__(self, binary, one_way_ms, logdir, realtime=True, cc="cubic"):
        self.near = self.far = self.proc = None
        self.log = os.path.join(logdir, "delayline.log")
        try:
            self.near = NetNs(NS_PREFIX + "-near", blackhole=False)
            self.far = NetNs(NS_PREFIX + "-far", blackhole=False)
            argv = [binary, "-d", "%g" % one_way_ms] + (["-r"] if realtime else [])
            self.proc = bench.start(argv + [self.near.path + ":wan0", self.far.path + ":wan1"],
                                    self.log, None)
            self._wait_lines("ready", 1, 10)
            for ns, dev, addr in ((self.near, "wan0", NEAR_ADDR), (self.far, "wan1", FAR_ADDR)):
                ns.ip("link", "set", dev, "addrgenmode", "none")   # no IPv6 chatter
                ns.ip("addr", "add", addr + "/24", "dev", dev)
                ns.ip("link", "set", dev, "up")
                if cc:
                    ns.ip("route", "replace", NET, "dev", dev, "proto", "kernel", "scope", "link",
                          "src", addr, "congctl", "lock", cc)
        except BaseException:
            self.close()
            raise

    def _lines(self, word):
        with open(self.log, errors="replace") as f:
            return [x.split() for x in f if x.startswith(word + " ")]

    def _wait_lines(self, word, n, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self._lines(word)
            if len(lines) >= n:
                return lines[n - 1]
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError("delayline: no '%s' line: %s" % (word, bench.tail(self.log).strip()))

    def stats(self):
        """The line's counters (SIGUSR1): packets each way, drops, and how
        late after their due time packets went out (mean, max, over 1 ms)."""
        n = len(self._lines("stats")) + 1
        self.proc.send_signal(signal.SIGUSR1)
        fields = dict(x.split("=", 1) for x in self._wait_lines("stats", n, 5)[1:])
        return {k: float(v) if "." in v else int(v) for k, v in fields.items()}

    def close(self):
        if self.proc is not None:
            bench.stop(self.proc)
        for ns in (self.far, self.near):
            if ns is not None:
                ns.close()


def host_cc():
    try:
        with open("/proc/sys/net/ipv4/tcp_congestion_control") as f:
            return f.read().strip()
    except OSError:
        return "unknown"


class InNamespace:
    """with InNamespace(path): this thread (and what it starts) in another
    network namespace, back in the one it came from afterwards."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        self.home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        setns(self.path)
        return self

    def __exit__(self, *exc):
        setns("/proc/self/fd/%d" % self.home)
        os.close(self.home)


# ---------------------------------------------------------------- the client

class Target:
    """Where the client connects: host:port, with TLS (ctx, verified against
    the run's CA for UP_NAME, resuming the last session) or plain."""

    def __init__(self, host, port, ctx=None):
        self.host, self.port, self.ctx = host, port, ctx
        self.session = None
        self.body = b""

    def connect(self, timeout=15):
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        # As curl and every proxy here: no Nagle wait for the request after
        # the handshake's last flight (it would cost an RTT).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ctx is None:
            return sock
        try:
            return self.ctx.wrap_socket(sock, server_hostname=UP_NAME, session=self.session)
        except BaseException:
            sock.close()
            raise

    def keep_session(self, sock):
        if self.ctx is not None and sock.session is not None:
            self.session = sock.session


def tls_client_context(ca):
    ctx = ssl.create_default_context(cafile=ca)       # chain and host name verified
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def request(close):
    return ("GET /tiny.txt HTTP/1.1\r\nHost: %s\r\n%s\r\n"
            % (UP_NAME, "Connection: close\r\n" if close else "")).encode()


def ask(sock, close):
    """One GET on sock: the milliseconds from now to the first byte of the
    answer, after reading it whole (RuntimeError unless 200 with the body)."""
    t0 = time.perf_counter()
    sock.sendall(request(close))
    data = sock.recv(65536)
    t1 = time.perf_counter()
    read_answer(sock, data)
    return 1e3 * (t1 - t0)


def read_answer(sock, data):
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        if not more:
            raise RuntimeError("connection closed after %d bytes: %r" % (len(data), data[:60]))
        data += more
    head, body = data.split(b"\r\n\r\n", 1)
    status = head.split(b"\r\n", 1)[0]
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    if b" 200 " not in status + b" " or not m:
        raise RuntimeError("answer %r" % status[:60])
    while len(body) < int(m.group(1)):
        more = sock.recv(65536)
        if not more:
            raise RuntimeError("body cut at %d bytes" % len(body))
        body += more
    return body


def new_connection(target):
    """Milliseconds from connect() to the first byte of the answer to a GET
    on a new connection (closed after it)."""
    t0 = time.perf_counter()
    sock = target.connect()
    try:
        sock.sendall(request(close=True))
        data = sock.recv(65536)
        t1 = time.perf_counter()
        if not data:
            raise RuntimeError("connection closed before any answer")
        read_answer(sock, data)
        target.keep_session(sock)
    finally:
        sock.close()
    return 1e3 * (t1 - t0)


def error_text(e):
    return "%s: %s" % (type(e).__name__, str(e)[:100])


def sequential(fn, count, warmup, interval_s):
    """fn() count times after warmup more, one start every interval_s (or
    when the previous ends); returns (samples in ms, error texts)."""
    samples, errors = [], []
    for i in range(warmup + count):
        start = time.monotonic()
        try:
            v = fn()
            if i >= warmup:
                samples.append(v)
        except (OSError, RuntimeError) as e:        # ssl.SSLError is an OSError
            errors.append(error_text(e))
        time.sleep(max(0.0, start + interval_s - time.monotonic()))
    return samples, errors


def keepalive(target, count, warmup, interval_s):
    """count requests over one open connection, after warmup more."""
    sock = target.connect()
    try:
        return sequential(lambda: ask(sock, close=False), count, warmup, interval_s)
    finally:
        sock.close()


def burst(target, n):
    """n clients, one thread each, released at once: each one's time to
    first byte of a new connection (None when it failed) and the errors."""
    gate = threading.Barrier(n)
    out, errors = [None] * n, []

    def one(i):
        try:
            gate.wait(10)
            out[i] = new_connection(target)
        except (OSError, RuntimeError, threading.BrokenBarrierError) as e:
            errors.append(error_text(e))
    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out, errors


def connect_times(host, port, count, interval_s=0.02):
    """TCP connect() times to host:port in ms: one RTT of the line each."""
    def once():
        t0 = time.perf_counter()
        with socket.create_connection((host, port), timeout=10):
            return 1e3 * (time.perf_counter() - t0)
    return sequential(once, count, 2, interval_s)


# ---------------------------------------------------------------- numbers

def pct(xs, p):
    """The p-th percentile (nearest rank) of xs, None when empty."""
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    return xs[max(1, -(-p * len(xs) // 100)) - 1]        # rank: ceil(p% of n)


def summary(samples, rtt):
    """{n, median, p90, min, max} in ms, and median/p90 in RTT units."""
    xs = [x for x in samples if x is not None]
    if not xs:
        return {"n": 0}
    s = {"n": len(xs), "median": statistics.median(xs), "p90": pct(xs, 90),
         "min": min(xs), "max": max(xs)}
    s["median_rtt"], s["p90_rtt"] = s["median"] / rtt, s["p90"] / rtt
    return s


def line_summary(samples, configured_ms):
    xs = [x for x in samples if x is not None]
    return {"configured_rtt_ms": configured_ms, "n": len(xs),
            "rtt_ms": statistics.median(xs), "min_ms": min(xs), "p90_ms": pct(xs, 90),
            "max_ms": max(xs), "jitter_ms": statistics.pstdev(xs)}


def metric(body, name):
    m = re.search(r'^%s\{service="bench"\} (\d+)$' % re.escape(name),
                  body.decode(errors="replace"), re.M)
    return int(m.group(1)) if m else None


def pool_counters(port):
    body = bench.scrape_metrics(port)
    return {k: metric(body, "tlsfwd_pool_" + k) for k in ("ready", "taken_total",
                                                          "missed_total", "failures_total")}


def wait_pool_full(port, want, timeout=10.0):
    """Milliseconds until tlsfwd_pool_ready reaches want (None: it did not)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if (pool_counters(port)["ready"] or 0) >= want:
            return 1e3 * (time.monotonic() - t0)
        time.sleep(0.005)
    return None


class PoolWatch(threading.Thread):
    """Reads tlsfwd_pool_ready every 5 ms from start() (for 15 s at most):
    drained_ms, when it was first below want, and full_ms, when it was back
    at want after that, both from start() (None: not seen)."""

    def __init__(self, port, want):
        super().__init__(daemon=True)
        self.port, self.want = port, want
        self.drained_ms = self.full_ms = None
        self.t0 = time.monotonic()

    def run(self):
        while time.monotonic() - self.t0 < 15:
            try:
                ready = pool_counters(self.port)["ready"] or 0
            except (OSError, RuntimeError):
                ready = 0
            t = 1e3 * (time.monotonic() - self.t0)
            if ready < self.want and self.drained_ms is None:
                self.drained_ms = t
            elif ready >= self.want and self.drained_ms is not None:
                self.full_ms = t
                return
            time.sleep(0.005)


def upstream_tls(path, offset):
    """What the upstream's access log says since offset: {protocol: count}
    and how many sessions were resumed; returns (info, new offset)."""
    try:
        with open(path, errors="replace") as f:
            f.seek(offset)
            text = f.read()
            offset = f.tell()
    except OSError:
        return None, offset
    protocols, resumed, n = {}, 0, 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2 or parts[0] == "-":
            continue
        n += 1
        protocols[parts[0]] = protocols.get(parts[0], 0) + 1
        resumed += parts[1] == "r"
    return ({"requests": n, "protocols": protocols, "resumed": resumed} if n else None), offset


# ---------------------------------------------------------------- rows

class WanBench(bench.Bench):
    """bench.Bench's proxies (templates, verify check, start and stop), with
    the upstream across the line and nothing pinned; the tlsfwd rows get
    `pool` and a metrics listener (for the pool's counters)."""

    def __init__(self, a, tmp):
        super().__init__(a, tmp)
        self.load_cpus = self.proxy_cpus = self.all_cpus = None
        self.up_addr = FAR_ADDR
        self.tlsfwd_metrics = {}        # listen port -> metrics port
        self.pool_supported = None

    def start_upstream(self, wrap):
        self.upstream, self.plain_port, self.tls_port = bench.start_upstream(
            self.tmp, self.ca, self.nofile, self.worker_connections, None, addr=FAR_ADDR,
            name=UP_NAME, wrap=wrap, access_log=ACCESS_LOG.replace("@DIR@", self.tmp))
        log("upstream nginx in the far namespace: http %s:%d, https %s:%d"
            % (FAR_ADDR, self.plain_port, FAR_ADDR, self.tls_port))

    def detect_pool(self):
        if self.pool_supported is None:
            conf = self.tlsfwd_config("tlsfwd-probe", 1, UP_NAME, UP_NAME,
                                      service_extra="pool = %d" % self.a.pool)
            r = bench.run([self.a.tlsfwd, "-t", "-c", conf], check=False)
            self.pool_supported = r.returncode == 0
            self.pool_probe_error = " ".join((r.stderr or r.stdout).strip().splitlines()[:1])
        return self.pool_supported

    def proxy_command(self, key, port, name, sni):
        if key not in ("tlsfwd", "tlsfwd-pool"):
            return super().proxy_command(key, port, name, sni)
        mport = self.tlsfwd_metrics[port] = bench.free_port()
        extra = "pool = %d" % self.a.pool if key == "tlsfwd-pool" else ""
        conf = self.tlsfwd_config(key, port, name, sni, metrics_port=mport, service_extra=extra)
        return [self.a.tlsfwd, "-c", conf], None

    def target(self, key, port=None):
        if key == "direct-plain":
            return Target(FAR_ADDR, self.plain_port)
        if key == "direct-tls":
            return Target(FAR_ADDR, self.tls_port, tls_client_context(self.ca))
        return Target("127.0.0.1", port)

    def measure_wan(self, key, label, rtt):
        a = self.a
        row = {"key": key, "label": label, "errors": [], "notes": []}
        if key == "tlsfwd-pool" and not self.detect_pool():
            row["na"] = "n/a (binary has no pool)"
            row["notes"].append("`tlsfwd -t` refuses `pool = %d`: %s" % (a.pool, self.pool_probe_error))
            return row
        proc = port = mport = None
        try:
            if not key.startswith("direct"):
                if not self.verify_check(key):
                    row["errors"].append("a wrong upstream host name was NOT refused")
                proc, port = self.start_proxy(key, name=UP_NAME, sni=UP_NAME)
                mport = self.tlsfwd_metrics.get(port)
                if mport is not None and not bench.wait_port(mport, proc=proc):
                    raise RuntimeError("tlsfwd: no metrics listener on %d" % mport)
            if key == "tlsfwd-pool":
                row["pool_filled_ms"] = wait_pool_full(mport, a.pool)
            target = self.target(key, port)
            offset = os.path.getsize(self.access_log) if os.path.exists(self.access_log) else 0
            before = pool_counters(mport) if mport else None
            samples, errors = sequential(lambda: new_connection(target), a.count, a.warmup,
                                         a.interval_ms / 1e3)
            row["newconn_ms"], row["newconn"] = samples, summary(samples, rtt)
            row["errors"] += ["new connection: " + e for e in errors]
            row["upstream_tls"], _ = upstream_tls(self.access_log, offset)
            if before is not None:
                after = pool_counters(mport)
                row["pool_newconn"] = {k: after[k] - before[k] for k in
                                       ("taken_total", "missed_total", "failures_total")
                                       if after[k] is not None and before[k] is not None}
            samples, errors = keepalive(target, a.count, 1, a.interval_ms / 1e3)
            row["keepalive_ms"], row["keepalive"] = samples, summary(samples, rtt)
            row["errors"] += ["keep-alive: " + e for e in errors]
            if key in BURST_ROWS and a.burst:
                row["burst"] = self.burst(target, mport, rtt, key == "tlsfwd-pool")
                row["errors"] += ["burst: " + e for e in row["burst"]["errors"]]
            if proc is not None and proc.poll() is not None:
                raise RuntimeError("%s exited: %s" % (key, bench.tail(proc.logfile).strip()[-300:]))
        except (RuntimeError, OSError) as e:
            row["errors"].append(error_text(e))
        finally:
            bench.stop(proc)
        if proc is not None and key.startswith("tlsfwd"):
            self.tlsfwd_log_note(row, proc.logfile)
        for e in row["errors"]:
            log("%-13s ERROR %s" % (key, e))
        return row

    def burst(self, target, mport, rtt, pooled):
        """The burst on a proxy at rest (with a pool: once it is full, and
        watched while it empties and fills again)."""
        a = self.a
        time.sleep(0.5)
        res = {"clients": a.burst}
        if pooled:
            res["pool_full_before"] = wait_pool_full(mport, a.pool) is not None
        before = pool_counters(mport) if mport else None
        watch = PoolWatch(mport, a.pool) if pooled else None
        if watch:
            watch.start()
        t0 = time.monotonic()
        out, errors = burst(target, a.burst)
        res["took_ms"] = 1e3 * (time.monotonic() - t0)
        res.update({"ms": out, "errors": errors, "failed": sum(1 for x in out if x is None),
                    "summary": summary(out, rtt),
                    "within_1_5_rtt": sum(1 for x in out if x is not None and x <= 1.5 * rtt)})
        if before is not None and pooled:
            after = pool_counters(mport)
            res["pool"] = {k: after[k] - before[k] for k in
                           ("taken_total", "missed_total", "failures_total")
                           if after[k] is not None and before[k] is not None}
        if watch:      # from the burst's start
            watch.join(20)
            res["drained_ms"], res["refilled_ms"] = watch.drained_ms, watch.full_ms
        return res


# ---------------------------------------------------------------- report

def cell(s, what):
    """'61.3 ms (3.05 RTT)' for the summary s's median or p90."""
    if not s or not s.get("n"):
        return "—"
    return "%s ms (%.2f RTT)" % (fmt(s[what], 1), s[what + "_rtt"])


def tls_cell(info):
    if not info:
        return "—"
    protos = ", ".join("%s %d" % kv for kv in sorted(info["protocols"].items()))
    return "%s; %d of %d resumed" % (protos, info["resumed"], info["requests"])


def markdown(meta, line, rows):
    """The report: the line, the table of rows, the burst, notes."""
    rtt = line["rtt_ms"]
    out = ["### tlsfwd over a %g ms round trip (`make bench-wan`), %s"
           % (line["configured_rtt_ms"], meta["date"]), "",
           "Machine: %d cores, %s, Linux %s. Two network namespaces joined by "
           "`bench/delayline` (%g ms each way); the upstream nginx in one, the proxy and "
           "the client in the other; TCP congestion control %s. %d samples per cell (new "
           "connections one every %g ms after %d more), time from the client's connect() to "
           "the first byte of the answer to a small GET."
           % (meta["nproc"], meta["cpu"], meta["kernel"], line["configured_rtt_ms"] / 2,
              meta.get("congestion_control", "?"), meta["count"], meta["interval_ms"],
              meta["warmup"]), "",
           "The line: RTT **%s ms** (median TCP connect time over %d connects; min %s, "
           "p90 %s, max %s ms), jitter **%s ms** (standard deviation)."
           % (fmt(rtt, 2), line["n"], fmt(line["min_ms"], 2), fmt(line["p90_ms"], 2),
              fmt(line["max_ms"], 2), fmt(line["jitter_ms"], 2))]
    st = line.get("delayline")
    if st:
        out[-1] += (" Its packets went out %s µs after their due time on average "
                    "(%d of %d more than 1 ms late, at most %s ms); %d dropped."
                    % (fmt(st["late_mean_us"], 0), st["late_over_1ms"],
                       st["a_to_b"] + st["b_to_a"], fmt(st["late_max_us"] / 1e3, 2),
                       st["dropped"]))
    out += ["", "RTT units below are that measured RTT.", "",
            "| configuration | new connection: median | p90 | keep-alive: median | p90 "
            "| set-up (median new − keep-alive) | upstream TLS | errors |",
            "|---|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        if r.get("na"):
            out.append("| %s | %s | | | | | | |" % (r["label"], r["na"]))
            continue
        n, k = r.get("newconn"), r.get("keepalive")
        setup = "—"
        if n and n.get("n") and k and k.get("n"):
            d = n["median"] - k["median"]
            setup = "%s ms (%.2f RTT)" % (fmt(d, 1), d / rtt)
        out.append("| %s | %s | %s | %s | %s | %s | %s | %d |" % (
            r["label"], cell(n, "median"), cell(n, "p90"), cell(k, "median"), cell(k, "p90"),
            setup, tls_cell(r.get("upstream_tls")), len(r["errors"])))
    bursts = [r for r in rows if r.get("burst")]
    if bursts:
        out += ["", "Burst: %d clients connecting at once to a proxy at rest (the pool full); "
                "time to first byte of each:" % bursts[0]["burst"]["clients"], "",
                "| configuration | min | median | p90 | max | ≤ 1.5 RTT | taken from the pool "
                "| pool full again (from the burst's start) | errors |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in bursts:
            b, s = r["burst"], r["burst"]["summary"]
            pool = b.get("pool") or {}
            taken = ("%d (missed %d)" % (pool["taken_total"], pool["missed_total"])
                     if "taken_total" in pool and "missed_total" in pool else "—")
            refill = "—" if "refilled_ms" not in b else (
                "not in 15 s" if b["refilled_ms"] is None
                else "%s ms (%.1f RTT)" % (fmt(b["refilled_ms"], 0), b["refilled_ms"] / rtt))
            low, high = (("%s ms" % fmt(s[k], 1) if s.get("n") else "—") for k in ("min", "max"))
            out.append("| %s | %s | %s | %s | %s | %d of %d | %s | %s | %d |" % (
                r["label"], low, cell(s, "median"), cell(s, "p90"), high,
                b["within_1_5_rtt"], b["clients"], taken, refill, b["failed"]))
    notes = []
    for r in rows:
        for e in r["errors"]:
            notes.append("%s (!): %s" % (r["label"], e))
        for x in r["notes"]:
            notes.append("%s: %s" % (r["label"], x))
        if r.get("pool_filled_ms") is not None:
            notes.append("%s: the pool was full %s ms after tlsfwd listened; the sequential "
                         "clients took %s of its connections" % (
                             r["label"], fmt(r["pool_filled_ms"], 0),
                             (r.get("pool_newconn") or {}).get("taken_total", "?")))
    notes += meta.get("notes", [])
    if notes:
        out += ["", "Notes:", ""] + ["- " + x for x in notes]
    out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------- main

def parse_args(argv=None):
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rtt-ms", type=float, default=float(env("BENCH_WAN_RTT_MS", "20")))
    p.add_argument("--count", type=int, default=env("BENCH_WAN_COUNT"))
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--interval-ms", type=float, default=100.0)
    p.add_argument("--pool", type=int, default=4)
    p.add_argument("--burst", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="10 samples, burst 16")
    p.add_argument("--only", default=env("BENCH_WAN_ONLY"), help="comma-separated row keys")
    p.add_argument("--tlsfwd", default=env("TLSFWD", os.path.join(ROOT, "build", "tlsfwd")))
    p.add_argument("--delayline", default=env("DELAYLINE", os.path.join(ROOT, "build",
                                                                         "delayline")))
    p.add_argument("--cc", default="cubic",
                   help="TCP congestion control of the line's routes, both ends (default cubic, "
                        "Debian's default; 'host': the host's default, which a namespace takes)")
    p.add_argument("--no-realtime", action="store_true",
                   help="run the delay line without SCHED_FIFO")
    p.add_argument("--no-install", action="store_true", help="fail instead of apt-get install")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    p.add_argument("--out", default=bench.RESULTS, help="results directory (bench/results)")
    p.add_argument("--list", action="store_true", help="list the row keys and exit")
    a = p.parse_args(argv)
    if a.count is None:
        a.count = 10 if a.quick else 30
    if a.burst is None:
        a.burst = 16 if a.quick else 32
    a.count = int(a.count)
    a.only = [k.strip() for k in a.only.split(",") if k.strip()] if a.only else None
    if a.only and [k for k in a.only if k not in dict(ROWS)]:
        p.error("unknown row key(s); known: %s" % ",".join(dict(ROWS)))
    if a.rtt_ms < 0 or a.count < 1 or a.pool < 1:
        p.error("--rtt-ms must be >= 0, --count and --pool >= 1")
    # bench.Bench sizes its peers from these (no idle-memory test here).
    a.size_mib, a.idle, a.nofile = 0, 256, bench.raise_nofile(8192)
    return a


def run(a, tmp):
    line = DelayLine(os.path.abspath(a.delayline), a.rtt_ms / 2, tmp,
                     realtime=not a.no_realtime, cc=None if a.cc == "host" else a.cc)
    try:
        with InNamespace(line.near.path):
            b = WanBench(a, tmp)
            b.access_log = os.path.join(tmp, "access.log")
            b.start_upstream(line.far.wrap)
            samples, errors = connect_times(FAR_ADDR, b.plain_port, 50)
            if errors or not samples:
                bench.die("the line does not carry TCP: %s" % "; ".join(errors[:3]))
            lsum = line_summary(samples, a.rtt_ms)
            lsum["samples"] = samples
            log("line: RTT %.2f ms (configured %g), jitter %.2f ms"
                % (lsum["rtt_ms"], a.rtt_ms, lsum["jitter_ms"]))
            rows = []
            for key, label in ROWS:
                if a.only and key not in a.only:
                    continue
                label = label % a.pool if "%d" in label else label
                log("== %s" % key)
                r = b.measure_wan(key, label, lsum["rtt_ms"])
                for what in ("newconn", "keepalive"):
                    s = r.get(what) or {}
                    if s.get("n"):
                        log("%-13s %-9s median %.1f ms (%.2f RTT), p90 %.1f ms"
                            % (key, what, s["median"], s["median_rtt"], s["p90"]))
                rows.append(r)
                if b.upstream.poll() is not None:
                    bench.die("upstream nginx exited:\n" + bench.tail(tmp + "/upstream-error.log"))
            after, _ = connect_times(FAR_ADDR, b.plain_port, 20)
            lsum["rtt_after_ms"] = statistics.median(after) if after else None
            lsum["delayline"] = line.stats()
    finally:
        for p in list(bench.PROCS):     # everything in the namespaces, then them
            if p is not line.proc:
                bench.stop(p, grace=2.0)
        line.close()
    return lsum, rows


def main(argv=None):
    a = parse_args(argv)
    if a.list:
        for k, label in ROWS:
            print("%-13s %s" % (k, label % a.pool if "%d" in label else label))
        return 0
    if os.geteuid() != 0:
        bench.die("needs root (network namespaces and TUN devices): sudo make bench-wan")
    for path in (a.tlsfwd, a.delayline):
        if not os.access(path, os.X_OK):
            bench.die("%s is not built (make all build/delayline)" % path)
    a.tlsfwd = os.path.abspath(a.tlsfwd)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, bench.on_signal)
    bench.STATE["keep"] = a.keep
    for name in stale_leftovers():
        log("removed %s, left by a run that was killed" % name)
    bench.install_peers(not a.no_install)
    meta = bench.run_meta(a.tlsfwd, rtt_ms=a.rtt_ms, count=a.count, warmup=a.warmup,
                          interval_ms=a.interval_ms, pool=a.pool, burst=a.burst,
                          congestion_control=a.cc if a.cc != "host" else host_cc())
    bench.note_busy_before(meta)
    tmp = tempfile.mkdtemp(prefix="%s%d." % (TMP_PREFIX, os.getpid()))
    bench.STATE["tmp"] = tmp
    bench.make_pki(os.path.join(tmp, "pki"), UP_NAME, FAR_ADDR)
    bench.make_files(tmp, 0)
    line, rows = run(a, tmp)
    meta["elapsed_s"] = round(time.monotonic() - bench.T0)
    meta["notes"].append("whole run took %d s" % meta["elapsed_s"])
    bench.save_report(a.out, "wan", markdown(meta, line, rows),
                      {"meta": meta, "line": line, "rows": rows})
    return 1 if any(r["errors"] for r in rows if r["key"].startswith("tlsfwd")) else 0


if __name__ == "__main__":
    sys.exit(bench.run_main(main))
