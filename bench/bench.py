#!/usr/bin/env python3
"""tlsfwd benchmark: tlsfwd against stunnel4, haproxy, nginx stream and socat.

    python3 bench/bench.py [--quick | --big] [options]     (or: make bench)

One run on this machine: installs the peers that are missing (apt-get, as
root), makes a throw-away CA and an ECDSA P-256 certificate for localhost,
starts one upstream nginx (HTTPS with that certificate, plus a plaintext port
for the baseline), then runs each proxy in turn in front of it, every one
verifying the upstream's chain and host name. Per proxy it measures bulk
download and upload (curl), keep-alive and new-connection request rates and
p99 latency (wrk), and idle memory per connection. It prints a markdown table
and the tlsfwd ratios, and writes bench/results/latest.{json,md}.

Pinning (with 2+ cores): this script, curl, wrk and the upstream nginx run on
the first core ("load core"); each proxy runs alone on the second ("proxy
core"), except the tlsfwd workers=2 row, which may use every core.

The tlsfwd-metrics row is the tlsfwd row with `metrics_listen` on and a
scraper (a thread of this script, so on the load core) that GETs /metrics
every second for as long as that tlsfwd runs; the report gives its CPU per
request and per GB against the tlsfwd row, and what one scrape costs.

Every option also has an environment variable (the flag wins):
    --size-mib N     BENCH_SIZE_MIB   bulk file size (default 256, quick 64)
    --reps N         BENCH_REPS       bulk transfers per direction, median (3, quick 1)
    --duration S     BENCH_DURATION   seconds per wrk run (10, quick 3)
    --conns N        BENCH_CONNS      wrk connections (32)
    --idle N         BENCH_IDLE       idle connections for the memory test
                                      (5000, quick 1000, big 50000)
    --only A,B       BENCH_ONLY       only these rows (keys: see --list)
    --tlsfwd PATH    TLSFWD           the binary (default build/tlsfwd)
"""

import argparse
import asyncio
import collections
import datetime
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TEMPLATES = os.path.join(HERE, "templates")
RESULTS = os.path.join(HERE, "results")

# Debian package -> a command it provides (checked with `which`).
PEER_PACKAGES = [
    ("nginx", "nginx"),
    ("stunnel4", "stunnel4"),
    ("haproxy", "haproxy"),
    ("socat", "socat"),
    ("wrk", "wrk"),
    ("curl", "curl"),
    ("openssl", "openssl"),
]
# Packages whose nginx has the stream module (dynamic or built in).
STREAM_PACKAGES = ["libnginx-mod-stream", "nginx-full", "nginx-extras"]
STREAM_MODULE_DIRS = ["/usr/lib/nginx/modules", "/usr/share/nginx/modules"]

# Fork-per-connection peers get at most this many idle connections (each
# connection is a whole process; tens of thousands would exhaust pid_max
# and memory). Overridable with BENCH_IDLE_CAP_SOCAT.
SOCAT_IDLE_CAP = int(os.environ.get("BENCH_IDLE_CAP_SOCAT", "2000"))

ROWS = [
    # key, label
    ("direct-plain", "direct, plain HTTP (no proxy, no TLS)"),
    ("direct-tls", "direct, HTTPS (client does TLS, no proxy)"),
    ("tlsfwd", "tlsfwd"),
    ("tlsfwd-metrics", "tlsfwd metrics on (/metrics scraped every 1 s)"),
    ("tlsfwd-nocache", "tlsfwd session_cache=off"),
    ("tlsfwd-w2", "tlsfwd workers=2 (no pinning)"),
    ("tlsfwd-nocache-w2", "tlsfwd session_cache=off workers=2 (no pinning; new-conn only)"),
    ("stunnel", "stunnel4"),
    ("haproxy", "haproxy"),
    ("nginx-stream", "nginx stream"),
    ("socat", "socat"),
]

T0 = time.monotonic()
PROCS = []          # every Popen we started (process-group leaders)
STATE = {"tmp": None, "keep": False, "sysctl_restore": None}


def log(msg):
    print("[%4ds] %s" % (time.monotonic() - T0, msg), file=sys.stderr, flush=True)


def die(msg):
    log("bench: error: " + msg)
    sys.exit(1)


# ---------------------------------------------------------------- cleanup

def stop(p, grace=5.0):
    """Stop one peer: SIGTERM to its process group, SIGKILL what is left."""
    if p is None:
        return
    scraper = getattr(p, "scraper", None)
    if scraper is not None:       # before the SIGTERM: no failed scrape at exit
        scraper.stop()
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        p.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(p.pid, signal.SIGKILL)   # forked children (socat) too
    except ProcessLookupError:
        pass
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    if p in PROCS:
        PROCS.remove(p)


def cleanup():
    for p in list(PROCS):
        stop(p, grace=2.0)
    if STATE["sysctl_restore"]:
        path, value = STATE["sysctl_restore"]
        try:
            with open(path, "w") as f:
                f.write(value)
            log("restored %s to %s" % (path, value.strip()))
        except OSError as e:
            log("could not restore %s: %s" % (path, e))
        STATE["sysctl_restore"] = None
    tmp = STATE["tmp"]
    if tmp and os.path.isdir(tmp):
        if STATE["keep"]:
            log("kept temp dir %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        STATE["tmp"] = None


def on_signal(signum, _frame):
    log("caught signal %d, cleaning up" % signum)
    raise SystemExit(128 + signum)


# ---------------------------------------------------------------- helpers

def run(argv, timeout=600, check=True, **kw):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError("%s exited %d: %s" % (" ".join(argv), r.returncode,
                                                 (r.stderr or r.stdout).strip()[-800:]))
    return r


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout=15.0, proc=None, host="127.0.0.1"):
    """Bounded connect loop: True once host:port accepts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def render(template, values, dest):
    with open(os.path.join(TEMPLATES, template)) as f:
        text = f.read()
    for k, v in values.items():
        text = text.replace("@%s@" % k, str(v))
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise RuntimeError("%s: unfilled %s" % (template, ", ".join(sorted(set(left)))))
    with open(dest, "w") as f:
        f.write(text)
    return dest


_LIBC = []


def start(argv, logfile, cpus):
    """Start a peer in its own session (so the whole tree can be stopped),
    pinned to `cpus` (a set, or None to leave the affinity alone). It gets
    SIGKILL if this script dies without its clean-up (SIGKILL, a crash)."""
    out = open(logfile, "ab")
    if not _LIBC:                   # loaded before the fork, used after it
        import ctypes
        _LIBC.append(ctypes.CDLL(None, use_errno=True))

    def pre():
        _LIBC[0].prctl(1, signal.SIGKILL, 0, 0, 0)      # PR_SET_PDEATHSIG
        if cpus is not None:
            os.sched_setaffinity(0, cpus)

    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                         stderr=subprocess.STDOUT, start_new_session=True,
                         preexec_fn=pre, close_fds=True)
    out.close()
    p.logfile = logfile
    PROCS.append(p)
    return p


def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def group_pids(pgid):
    """Pids whose process group is pgid (the peer and every child)."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[2]) == pgid:
            pids.append(int(d))
    return pids


def group_memory(pgid):
    """(RSS KiB summed over the group's processes, PSS KiB, process count)."""
    rss = pss = 0
    pids = group_pids(pgid)
    for pid in pids:
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
            with open("/proc/%d/smaps_rollup" % pid) as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            pass
    return rss, pss, len(pids)


def group_cpu_s(pgid):
    """CPU seconds (user+system, with reaped children) of a process group."""
    ticks = 0
    for pid in group_pids(pgid):
        try:
            with open("/proc/%d/stat" % pid) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        ticks += sum(int(x) for x in fields[11:15])   # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# ---------------------------------------------------------------- install

def stream_module_path():
    for d in STREAM_MODULE_DIRS:
        p = os.path.join(d, "ngx_stream_module.so")
        if os.path.exists(p):
            return p
    return None


def nginx_has_static_stream():
    if not shutil.which("nginx"):
        return False
    r = run(["nginx", "-V"], check=False)
    conf = r.stderr + r.stdout
    return "--with-stream " in conf + " " and "--with-stream=dynamic" not in conf


def install_peers(allow):
    missing = [pkg for pkg, cmd in PEER_PACKAGES if not shutil.which(cmd)]
    if not stream_module_path() and not nginx_has_static_stream():
        # Debian: libnginx-mod-stream ships ngx_stream_module.so (nginx-full
        # and nginx-extras depend on it); plain `nginx` does not have it.
        missing.append("libnginx-mod-stream")
    if not missing:
        return
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + missing
    if not allow:
        die("missing: %s; run: sudo %s" % (" ".join(missing), " ".join(cmd)))
    if os.geteuid() != 0:
        log("bench: missing Debian packages: %s" % " ".join(missing))
        log("bench: run: sudo apt-get update && sudo %s" % " ".join(cmd))
        sys.exit(1)
    log("installing: %s" % " ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
    subprocess.run(cmd, env=env, check=True)
    still = [pkg for pkg, c in PEER_PACKAGES if not shutil.which(c)]
    if still or not (stream_module_path() or nginx_has_static_stream()):
        die("still missing after apt-get: %s" % (" ".join(still) or "ngx_stream_module"))


def versions(tlsfwd):
    def first(argv, pattern=None):
        try:
            r = run(argv, check=False, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        for line in (r.stdout + r.stderr).splitlines():
            if pattern is None or re.search(pattern, line):
                return line.strip()
        return None
    return {
        "tlsfwd": first([tlsfwd, "-V"]),
        "gnutls": first(["dpkg-query", "-W", "-f", "${Version}", "libgnutls30"]),
        "nginx": first(["nginx", "-v"]),
        "stunnel4": first(["stunnel4", "-version"], r"^stunnel \d"),
        "haproxy": first(["haproxy", "-v"], r"version"),
        "socat": first(["socat", "-V"], r"socat version"),
        "wrk": first(["wrk", "-v"], r"^wrk"),
        "curl": first(["curl", "-V"]),
        "openssl": first(["openssl", "version"]),
    }


# ---------------------------------------------------------------- setup

def make_pki(d, name="localhost", ip="127.0.0.1"):
    """d/ca.pem (a throw-away CA, its key beside it) and d/server.pem with
    d/server.key: CN and DNS subjectAltName `name`, IP subjectAltName `ip`."""
    os.makedirs(d)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run(["openssl", "req", "-x509"] + ec + [
        "-keyout", d + "/ca.key", "-out", d + "/ca.pem", "-days", "2",
        "-subj", "/CN=tlsfwd bench CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    run(["openssl", "req", "-new"] + ec + [
        "-keyout", d + "/server.key", "-out", d + "/server.csr",
        "-subj", "/CN=" + name])
    with open(d + "/server.ext", "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\n"
                "subjectAltName=DNS:%s,IP:%s\n" % (name, ip))
    run(["openssl", "x509", "-req", "-in", d + "/server.csr", "-CA", d + "/ca.pem",
         "-CAkey", d + "/ca.key", "-CAcreateserial", "-days", "2",
         "-extfile", d + "/server.ext", "-out", d + "/server.pem"])
    os.chmod(d + "/server.key", 0o600)


def make_files(tmp, size_mib):
    www = os.path.join(tmp, "www")
    os.makedirs(os.path.join(www, "upload"))
    for sub in ("nginx-body", "nginx-proxy", "nginx-fastcgi", "nginx-uwsgi", "nginx-scgi"):
        os.makedirs(os.path.join(tmp, sub))
    with open(os.path.join(www, "tiny.txt"), "w") as f:
        f.write("tlsfwd bench tiny response body\n")
    chunk = 4 << 20
    with open(os.path.join(www, "big.bin"), "wb") as f:
        for _ in range(size_mib * (1 << 20) // chunk):
            f.write(os.urandom(chunk))


def pick_tmp(size_mib):
    need = (3 * size_mib + 256) << 20
    if os.path.isdir("/dev/shm"):
        st = os.statvfs("/dev/shm")
        if st.f_bavail * st.f_frsize > need:
            return tempfile.mkdtemp(prefix="tlsfwd-bench.", dir="/dev/shm")
    return tempfile.mkdtemp(prefix="tlsfwd-bench.")


def raise_nofile(want):
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    if hard < want:
        try:
            with open("/proc/sys/fs/nr_open") as f:
                want = min(want, int(f.read()))
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        except (OSError, ValueError):
            want = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


def cpu_ticks():
    """{cpu number: (all ticks, idle ticks)} from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            name = line.split(None, 1)[0]
            if not name.startswith("cpu") or name == "cpu":
                continue
            v = list(map(int, line.split()[1:]))
            out[int(name[3:])] = (sum(v), v[3] + (v[4] if len(v) > 4 else 0))
    return out


def cpus_busy(before, after, cpus):
    """Busy share (0-1) of the CPUs in `cpus` between two cpu_ticks()."""
    total = sum(after[c][0] - before[c][0] for c in cpus)
    idle = sum(after[c][1] - before[c][1] for c in cpus)
    return 1.0 - idle / max(1, total)


def cpu_busy(seconds=1.0):
    """Share of all CPUs busy over `seconds` (before the run: anything else
    running makes every number here unreliable)."""
    before = cpu_ticks()
    time.sleep(seconds)
    return cpus_busy(before, cpu_ticks(), set(before))


def widen_port_range(need):
    """50000 connections from 127.0.0.1 to one address need more ephemeral
    ports than Linux's default 32768-60999; widen (root) and restore later."""
    path = "/proc/sys/net/ipv4/ip_local_port_range"
    try:
        with open(path) as f:
            old = f.read()
        lo, hi = map(int, old.split())
    except (OSError, ValueError):
        return None
    if hi - lo + 1 >= need + 1000:
        return None
    if os.geteuid() != 0:
        return "ip_local_port_range %d-%d is too small for %d connections" % (lo, hi, need)
    try:
        with open(path, "w") as f:
            f.write("1024 65535\n")
    except OSError as e:
        return "could not widen ip_local_port_range: %s" % e
    STATE["sysctl_restore"] = (path, old)
    log("widened %s from %s to 1024-65535 for this run" % (path, old.strip()))
    return None


# ---------------------------------------------------------------- measurements

def curl_transfer(url, size, upload=None, ca=None, resolve=None):
    """GET url, or PUT the file `upload` to it, with curl; returns (MB/s, None)
    when exactly `size` bytes moved with the expected status, else (None, why)."""
    what = "upload" if upload else "download"
    argv = ["curl", "-sS", "-o", "/dev/null", "-m", "300",
            "-w", "%%{http_code} %%{size_%s} %%{speed_%s}" % (what, what)]
    if upload:
        argv += ["-H", "Expect:", "-T", upload]
    if ca:
        argv += ["--cacert", ca]
    if resolve:
        argv += ["--resolve", resolve]
    r = run(argv + [url], check=False, timeout=330)
    try:
        code, moved, speed = r.stdout.split()
    except ValueError:
        return None, "curl: %s" % r.stderr.strip()[:200]
    if code not in (("201", "204") if upload else ("200",)) or int(moved) != size:
        return None, "%s %s: HTTP %s, %s of %d bytes %s" % (
            "PUT" if upload else "GET", url, code, moved, size, r.stderr.strip()[:200])
    return float(speed) / 1e6, None


def curl_get(url, size, ca=None, resolve=None):
    return curl_transfer(url, size, None, ca, resolve)


def curl_put(url, path, size, ca=None, resolve=None):
    return curl_transfer(url, size, path, ca, resolve)


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def wrk(url, duration, conns, close, extra=()):
    """extra: more wrk arguments (e.g. -s SCRIPT)."""
    argv = ["wrk", "-t1", "-c%d" % conns, "-d%ds" % duration, "--latency", "--timeout", "5s"]
    if close:
        argv += ["-H", "Connection: close"]
    argv += list(extra)
    r = run(argv + [url], check=False, timeout=duration + 60)
    out = r.stdout
    res = {"rps": None, "p99_ms": None, "p50_ms": None, "requests": None,
           "socket_errors": None, "non_2xx": 0}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        res["rps"] = float(m.group(1))
    for pct, key in (("99", "p99_ms"), ("50", "p50_ms")):
        m = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s|m|h)\s*$" % pct, out, re.M)
        if m:
            res[key] = float(m.group(1)) * _UNIT[m.group(2)]
    m = re.search(r"(\d+) requests in", out)
    if m:
        res["requests"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"),
                                        map(int, m.groups())))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        res["non_2xx"] = int(m.group(1))
    if r.returncode != 0 or res["rps"] is None:
        res["error"] = "wrk exited %d: %s" % (r.returncode, (r.stderr or out).strip()[-300:])
    return res


def wrk_problems(res):
    errs = []
    if res.get("error"):
        errs.append(res["error"])
    se = res.get("socket_errors") or {}
    bad = {k: v for k, v in se.items() if v}
    if bad:
        errs.append("socket errors " + ", ".join("%s %d" % kv for kv in bad.items()))
    if res.get("non_2xx"):
        errs.append("%d non-2xx responses" % res["non_2xx"])
    return errs


IP_BIND_ADDRESS_NO_PORT = 24


async def _idle_open(port, n, concurrency=128, timeout=30.0):
    """Open n connections to 127.0.0.1:port, one GET /tiny.txt on each, and
    keep them. Above 20000, spread the source over 127.0.0.1, .2, ..."""
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(concurrency)
    conns, errors = [], collections.Counter()
    req = b"GET /tiny.txt HTTP/1.1\r\nHost: localhost\r\n\r\n"

    async def one(i):
        async with sem:
            w = None
            try:
                sock = socket.socket()
                if n > 20000:
                    try:    # pick the port at connect time, per 4-tuple
                        sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                    except OSError:
                        pass
                    sock.bind(("127.0.0.%d" % (1 + i // 20000), 0))
                sock.setblocking(False)
                try:
                    await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), timeout)
                except BaseException:
                    sock.close()
                    raise
                r, w = await asyncio.open_connection(sock=sock, limit=65536)
                w.write(req)
                head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), timeout)
                status = head.split(b"\r\n", 1)[0]
                if b" 200 " not in status + b" ":
                    raise RuntimeError("status %r" % status[:40])
                m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                if not m:
                    raise RuntimeError("no content-length")
                await asyncio.wait_for(r.readexactly(int(m.group(1))), timeout)
                conns.append((r, w))
            except Exception as e:   # counted and reported, never fatal
                errors["%s: %s" % (type(e).__name__, str(e)[:60])] += 1
                if w is not None:
                    w.close()

    await asyncio.gather(*(one(i) for i in range(n)))
    return conns, errors


def idle_memory(proc, port, n):
    """Fresh proxy: one warm-up request, RSS before, n idle connections (each
    did one request), RSS after; returns a dict for the JSON."""

    async def main():
        conns, errors = await _idle_open(port, n)
        await asyncio.sleep(1.5)         # let the proxy settle
        alive = proc.poll() is None
        after = group_memory(proc.pid)
        # Are they still open? (a proxy that dropped them would look cheap)
        await asyncio.sleep(0)
        dropped = sum(1 for r, w in conns if r.at_eof() or w.transport.is_closing())
        for _r, w in conns:
            w.close()
        await asyncio.sleep(0.2)
        return conns, errors, after, alive, dropped

    # Warm-up: the first connection pays one-off set-up (TLS library, caches).
    curl_get("http://127.0.0.1:%d/tiny.txt" % port, 32)
    time.sleep(0.5)
    before = group_memory(proc.pid)
    t = time.monotonic()
    conns, errors, after, alive, dropped = asyncio.run(main())
    ok = len(conns)
    res = {"conns_wanted": n, "conns_ok": ok, "conns_failed": sum(errors.values()),
           "errors": dict(errors.most_common(5)), "rss_before_kib": before[0],
           "rss_after_kib": after[0], "pss_before_kib": before[1],
           "pss_after_kib": after[1], "processes_before": before[2],
           "processes_after": after[2], "open_s": round(time.monotonic() - t, 1),
           "proxy_alive": alive, "closed_by_peer": dropped}
    if ok:
        res["kib_per_conn"] = (after[0] - before[0]) / ok
        res["pss_kib_per_conn"] = (after[1] - before[1]) / ok
    return res


def ok_pss(res):
    return res.get("pss_kib_per_conn") is not None


class Scraper(threading.Thread):
    """GET /metrics every `interval` seconds, one connection each as tlsfwd
    serves them (Connection: close), like a Prometheus scraping that often,
    until stop(). It is a thread of this script, so it runs on the load core."""

    def __init__(self, port, interval=1.0):
        super().__init__(daemon=True)
        self.port, self.interval = port, interval
        self.halt = threading.Event()
        self.ok, self.failed, self.ms, self.size, self.last = 0, [], [], None, None

    def run(self):
        due = time.monotonic()
        while not self.halt.is_set():
            t = time.monotonic()
            try:
                body = scrape_metrics(self.port)
                self.ms.append(1e3 * (time.monotonic() - t))
                self.ok += 1
                self.size, self.last = len(body), body
            except (OSError, http.client.HTTPException, RuntimeError) as e:
                self.failed.append("%s: %s" % (type(e).__name__, str(e)[:80]))
            due += self.interval
            self.halt.wait(max(0.0, due - time.monotonic()))

    def stop(self):
        self.halt.set()
        self.join(15)


def scrape_metrics(port, timeout=5):
    """The body of one GET /metrics (RuntimeError unless 200)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", "/metrics")
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError("GET /metrics: HTTP %d" % r.status)
        return body
    finally:
        c.close()


def group_oncpu_ns(pgid):
    """Nanoseconds on a CPU of every thread of a process group
    (/proc/PID/task/TID/schedstat): finer than the clock ticks of
    group_cpu_s, for short measurements."""
    ns = 0
    for pid in group_pids(pgid):
        try:
            tids = os.listdir("/proc/%d/task" % pid)
        except OSError:
            continue
        for tid in tids:
            try:
                with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                    ns += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return ns


def scrape_cost(proc, port, n=500):
    """tlsfwd's CPU per scrape: n scrapes back to back with no other load
    (the 1 s scraper's, if any fall in, are counted too); a dict for the JSON."""
    scraper = getattr(proc, "scraper", None)
    before = scraper.ok if scraper else 0
    ns0, t = group_oncpu_ns(proc.pid), time.monotonic()
    size = None
    for _ in range(n):
        size = len(scrape_metrics(port))
    ns1, wall = group_oncpu_ns(proc.pid), time.monotonic() - t
    scrapes = n + ((scraper.ok - before) if scraper else 0)
    return {"scrapes": scrapes, "bytes": size, "wall_s": round(wall, 3),
            "proxy_cpu_us_per_scrape": (ns1 - ns0) / 1e3 / scrapes}


def start_upstream(tmp, ca, nofile, worker_connections, cpus, addr="127.0.0.1",
                   name="localhost", wrap=None, access_log="access_log off;"):
    """The upstream nginx (templates/upstream-nginx.conf) serving tmp/www over
    plain HTTP and HTTPS (tmp/pki/server.pem, for `name`) on two free ports
    of `addr`, checked with one HTTPS request; wrap(argv) is how to run it
    (bench/wan.py: in another network namespace). Returns (process, plain
    port, TLS port)."""
    wrap = wrap or (lambda argv: argv)
    plain_port, tls_port = free_port(), free_port()
    conf = render("upstream-nginx.conf", {
        "DIR": tmp, "ADDR": addr, "PLAIN_PORT": plain_port, "TLS_PORT": tls_port,
        "ACCESS_LOG": access_log,
        "NOFILE": nofile, "WORKER_CONNECTIONS": worker_connections,
    }, os.path.join(tmp, "upstream-nginx.conf"))
    run(wrap(["nginx", "-t", "-p", tmp, "-e", tmp + "/upstream-error.log", "-c", conf]))
    proc = start(wrap(["nginx", "-p", tmp, "-e", tmp + "/upstream-error.log", "-c", conf]),
                 tmp + "/upstream-nginx.out", cpus)
    for port in (plain_port, tls_port):
        if not wait_port(port, proc=proc, host=addr):
            die("upstream nginx did not start:\n" + tail(tmp + "/upstream-error.log")
                + tail(proc.logfile))
    _speed, err = curl_get("https://%s:%d/tiny.txt" % (name, tls_port), 32, ca=ca,
                           resolve="%s:%d:%s" % (name, tls_port, addr))
    if err:
        die("upstream HTTPS check failed: " + err)
    return proc, plain_port, tls_port


# ---------------------------------------------------------------- peers

class Bench:
    def __init__(self, args, tmp):
        self.a = args
        self.tmp = tmp
        self.ca = os.path.join(tmp, "pki", "ca.pem")
        self.size = args.size_mib << 20
        self.big = os.path.join(tmp, "www", "big.bin")
        self.cpus = sorted(os.sched_getaffinity(0))
        if len(self.cpus) >= 2:
            self.load_cpus, self.proxy_cpus = {self.cpus[0]}, {self.cpus[1]}
        else:
            self.load_cpus = self.proxy_cpus = None
        self.all_cpus = set(self.cpus)
        self.nofile = args.nofile
        # Sized for the idle test, within the descriptor limit the peers get
        # (haproxy refuses to start when maxconn needs more than it can have).
        self.worker_connections = min(2 * args.idle + 2048, self.nofile - 64)
        self.maxconn = min(args.idle + 1024, (self.nofile - 256) // 2)
        self.notes = []
        self.workers_supported = None
        self.upstream = None
        self.up_addr = "127.0.0.1"   # the upstream's address (bench/wan.py: another)
        self.metrics_ports = {}      # tlsfwd listen port -> its metrics_listen port
        self.scrapers = {}           # row key -> its Scrapers (one per tlsfwd started)

    # -- upstream
    def start_upstream(self):
        self.upstream, self.plain_port, self.tls_port = start_upstream(
            self.tmp, self.ca, self.nofile, self.worker_connections, self.load_cpus)
        log("upstream nginx: http 127.0.0.1:%d, https 127.0.0.1:%d (pid %d)"
            % (self.plain_port, self.tls_port, self.upstream.pid))

    # -- proxies: each returns (argv, cpus) for a listen port and a verify name
    def tlsfwd_config(self, key, port, name, sni, workers=None, metrics_port=None,
                      service_extra=""):
        extra = []
        if workers is not None:
            extra.append("workers = %s" % workers)
        if metrics_port is not None:
            extra.append("metrics_listen = 127.0.0.1:%d" % metrics_port)
        return render("tlsfwd.ini", {
            "GLOBAL_EXTRA": "\n".join(extra), "SERVICE_EXTRA": service_extra,
            "LISTEN_PORT": port, "UP_ADDR": self.up_addr, "UP_PORT": self.tls_port,
            "SNI": sni, "NAME": name, "CA": self.ca,
            "SESSION_CACHE": "no" if key.startswith("tlsfwd-nocache") else "yes",
        }, os.path.join(self.tmp, "%s-%d.ini" % (key, port)))

    def detect_workers(self):
        if self.workers_supported is None:
            conf = self.tlsfwd_config("tlsfwd-probe", 1, "localhost", "localhost", workers=2)
            r = run([self.a.tlsfwd, "-t", "-c", conf], check=False)
            self.workers_supported = r.returncode == 0
            if not self.workers_supported:
                self.workers_probe_error = (r.stderr or r.stdout).strip().splitlines()[:1]
        return self.workers_supported

    def proxy_command(self, key, port, name, sni):
        tmp = self.tmp
        base = {"DIR": tmp, "LISTEN_PORT": port, "UP_ADDR": self.up_addr,
                "UP_PORT": self.tls_port, "CA": self.ca,
                "SNI": sni, "NAME": name, "NOFILE": self.nofile,
                "WORKER_CONNECTIONS": self.worker_connections,
                "MAXCONN": self.maxconn}
        if key in ("tlsfwd", "tlsfwd-metrics", "tlsfwd-nocache", "tlsfwd-w2",
                   "tlsfwd-nocache-w2"):
            workers = None
            two = key.endswith("-w2")
            if self.detect_workers():
                workers = 2 if two else 1
            mport = None
            if key == "tlsfwd-metrics":
                mport = self.metrics_ports[port] = free_port()
            conf = self.tlsfwd_config(key, port, name, sni, workers, mport)
            return [self.a.tlsfwd, "-c", conf], (self.all_cpus if two else self.proxy_cpus)
        if key == "stunnel":
            conf = render("stunnel.conf", base, "%s/stunnel-%d.conf" % (tmp, port))
            return ["stunnel4", conf], self.proxy_cpus
        if key == "haproxy":
            conf = render("haproxy.cfg", base, "%s/haproxy-%d.cfg" % (tmp, port))
            return ["haproxy", "-db", "-f", conf], self.proxy_cpus
        if key == "nginx-stream":
            mod = stream_module_path()
            base["LOAD_MODULE"] = "load_module %s;" % mod if mod else ""
            conf = render("nginx-stream.conf", base, "%s/nginx-stream-%d.conf" % (tmp, port))
            return ["nginx", "-p", tmp, "-e", tmp + "/stream-error.log", "-c", conf], self.proxy_cpus
        if key == "socat":
            conf = render("socat.args", base, "%s/socat-%d.args" % (tmp, port))
            with open(conf) as f:
                addrs = [l.strip() for l in f if l.strip() and not l.startswith("#")]
            return ["socat"] + addrs, self.proxy_cpus
        raise KeyError(key)

    def start_proxy(self, key, name="localhost", sni="localhost"):
        port = free_port()
        argv, cpus = self.proxy_command(key, port, name, sni)
        p = start(argv, "%s/%s-%d.log" % (self.tmp, key, port), cpus)
        if not wait_port(port, proc=p):
            msg = tail(p.logfile)
            stop(p)
            raise RuntimeError("%s did not listen on %d: %s" % (key, port, msg.strip()[-600:]))
        mport = self.metrics_ports.pop(port, None)
        if mport is not None:
            if not wait_port(mport, proc=p):
                msg = tail(p.logfile)
                stop(p)
                raise RuntimeError("%s: no metrics on %d: %s" % (key, mport, msg.strip()[-600:]))
            p.metrics_port = mport
            p.scraper = Scraper(mport)
            p.scraper.start()
            self.scrapers.setdefault(key, []).append(p.scraper)
        return p, port

    def verify_check(self, key):
        """The proxy must refuse an upstream whose name does not match: run it
        once expecting wrong.example (as SNI too: haproxy checks the name
        against the SNI it sent) and expect no 200; the upstream has one
        certificate and answers any SNI."""
        p, port = self.start_proxy(key, name="wrong.example", sni="wrong.example")
        try:
            r = run(["curl", "-sS", "-o", "/dev/null", "-m", "10", "-w", "%{http_code}",
                     "http://127.0.0.1:%d/tiny.txt" % port], check=False, timeout=30)
            return r.stdout.strip() != "200"
        finally:
            stop(p)

    # -- one row
    def measure(self, key):
        a = self.a
        row = {"key": key, "label": dict(ROWS)[key], "errors": [], "notes": []}
        proc = None
        if key == "direct-plain":
            base, kw = "http://127.0.0.1:%d" % self.plain_port, {}
            wrk_base = base
        elif key == "direct-tls":
            base = "https://localhost:%d" % self.tls_port
            kw = {"ca": self.ca, "resolve": "localhost:%d:127.0.0.1" % self.tls_port}
            wrk_base = "https://127.0.0.1:%d" % self.tls_port
        else:
            if key.endswith("-w2") and not self.detect_workers():
                row["skipped"] = ("tlsfwd does not accept `[global] workers = 2` (tlsfwd -t: %s)"
                                  % " ".join(self.workers_probe_error))
                return row
            row["verify_refuses_wrong_name"] = self.verify_check(key)
            if not row["verify_refuses_wrong_name"]:
                row["errors"].append("a wrong upstream host name was NOT refused")
            proc, port = self.start_proxy(key)
            base = wrk_base = "http://127.0.0.1:%d" % port
            kw = {}
            speed, err = curl_get(base + "/tiny.txt", 32)
            if err:
                stop(proc)
                row["errors"].append("first request failed: " + err)
                return row

        def alive():
            if proc is not None and proc.poll() is not None:
                raise RuntimeError("%s exited (%s): %s" % (key, proc.returncode,
                                                          tail(proc.logfile).strip()[-400:]))

        # Full handshakes with two workers: the proxy, not the load core, is
        # the limit there, so this row shows how far the workers scale.
        newconn_only = key == "tlsfwd-nocache-w2"
        try:
            for direction in (() if newconn_only else ("down", "up")):
                samples = []
                cpu0 = group_cpu_s(proc.pid) if proc is not None else None
                ticks0 = cpu_ticks()
                for i in range(a.reps):
                    if direction == "down":
                        v, err = curl_get(base + "/big.bin", self.size, **kw)
                    else:
                        v, err = curl_put(base + "/upload/blob-%s" % key, self.big, self.size, **kw)
                    if err:
                        row["errors"].append(err)
                    samples.append(v)
                    alive()
                row["bulk_%s_mbs_samples" % direction] = samples
                if proc is not None:
                    # CPU per GB moved: comparable even when the load core
                    # (curl and the upstream) limits the rate.
                    row["bulk_%s_cpu_s_per_gb" % direction] = (
                        (group_cpu_s(proc.pid) - cpu0) / (a.reps * self.size / 1e9))
                self.note_busy(row, "bulk_%s" % direction, ticks0)
                row["bulk_%s_mbs" % direction] = median(samples)
                log("%-14s bulk %-4s %s MB/s" % (key, direction, fmt(row["bulk_%s_mbs" % direction], 0)))
            try:
                os.unlink(os.path.join(self.tmp, "www", "upload", "blob-%s" % key))
            except OSError:
                pass
            for mode, close in (("keepalive", False), ("newconn", True)):
                if newconn_only and not close:
                    continue
                cpu0 = group_cpu_s(proc.pid) if proc is not None else None
                up0 = group_cpu_s(self.upstream.pid)
                ticks0 = cpu_ticks()
                res = wrk(wrk_base + "/tiny.txt", a.duration, a.conns, close)
                self.note_busy(row, mode, ticks0)
                if res.get("requests"):
                    # The upstream's share of the load core: what a proxy
                    # makes the server spend per request.
                    res["upstream_cpu_s"] = group_cpu_s(self.upstream.pid) - up0
                    row["%s_upstream_cpu_us_per_req" % mode] = (
                        1e6 * res["upstream_cpu_s"] / res["requests"])
                if proc is not None and res.get("requests"):
                    res["proxy_cpu_s"] = group_cpu_s(proc.pid) - cpu0
                    row["%s_cpu_us_per_req" % mode] = 1e6 * res["proxy_cpu_s"] / res["requests"]
                row[mode] = res
                row["%s_rps" % mode] = res["rps"]
                row["%s_p99_ms" % mode] = res["p99_ms"]
                row["errors"] += ["%s: %s" % (mode, e) for e in wrk_problems(res)]
                log("%-14s %-9s %s req/s, p99 %s ms" % (key, mode, fmt(res["rps"], 0),
                                                        fmt(res["p99_ms"], 2)))
                alive()
            if getattr(proc, "metrics_port", None):
                try:
                    row["scrape_cost"] = scrape_cost(proc, proc.metrics_port)
                    log("%-14s one scrape: %.1f µs of tlsfwd CPU (%d bytes)" % (
                        key, row["scrape_cost"]["proxy_cpu_us_per_scrape"],
                        row["scrape_cost"]["bytes"]))
                except (OSError, http.client.HTTPException) as e:
                    row["errors"].append("scrape cost: %s" % e)
        except RuntimeError as e:
            row["errors"].append(str(e))
        finally:
            stop(proc)
        if proc is not None and key.startswith("tlsfwd"):
            self.tlsfwd_log_note(row, proc.logfile)

        # Idle memory: a fresh proxy.
        if proc is not None and not newconn_only:
            n = a.idle
            if key == "socat" and n > SOCAT_IDLE_CAP:
                n = SOCAT_IDLE_CAP
                row["notes"].append("socat forks a process per connection: idle test capped "
                                    "at %d connections (BENCH_IDLE_CAP_SOCAT)" % n)
            try:
                proc, port = self.start_proxy(key)
                res = idle_memory(proc, port, n)
                row["idle"] = res
                row["idle_kib_per_conn"] = res.get("kib_per_conn")
                if res["conns_failed"]:
                    row["errors"].append("idle: %d of %d connections failed (%s)" % (
                        res["conns_failed"], n, "; ".join("%s x%d" % kv for kv in res["errors"].items())))
                if res["closed_by_peer"]:
                    row["errors"].append("idle: %d connections were closed by the proxy"
                                         % res["closed_by_peer"])
                if res["processes_after"] > res["processes_before"] and ok_pss(res):
                    row["notes"].append(
                        "one process per connection: the RSS sum counts shared pages once per "
                        "process; PSS (shared pages split) grows %.1f KiB/conn"
                        % res["pss_kib_per_conn"])
                if not res["proxy_alive"]:
                    row["errors"].append("idle: proxy exited: " + tail(proc.logfile).strip()[-300:])
                log("%-14s idle      %s KiB/conn over %d conns (RSS %d -> %d KiB, %d procs, %ss)"
                    % (key, fmt(row["idle_kib_per_conn"], 1), res["conns_ok"],
                       res["rss_before_kib"], res["rss_after_kib"], res["processes_after"],
                       res["open_s"]))
            except RuntimeError as e:
                row["errors"].append("idle: %s" % e)
            finally:
                stop(proc)
        self.scrape_summary(row, key)
        for e in row["errors"]:
            log("%-14s ERROR %s" % (key, e))
        return row

    def scrape_summary(self, row, key):
        """What the 1 s scrapers of a tlsfwd-metrics row saw: every scrape
        must have worked (a failed one is tlsfwd's error)."""
        scrapers = self.scrapers.pop(key, [])
        if not scrapers:
            return
        ms = [x for s in scrapers for x in s.ms]
        failed = [x for s in scrapers for x in s.failed]
        last = next((s.last for s in reversed(scrapers) if s.last), b"")
        m = re.search(rb'^tlsfwd_connections_total\{service="bench"\} (\d+)$', last, re.M)
        row["scrapes"] = {"ok": len(ms), "failed": len(failed),
                          "failures": failed[:5], "bytes": max((s.size or 0) for s in scrapers),
                          "p50_ms": median(ms), "max_ms": max(ms) if ms else None,
                          "last_connections_total": int(m.group(1)) if m else None}
        row["notes"].append("scraped /metrics %d times (every 1 s while tlsfwd ran), "
                            "%s bytes each, %s ms median, %s ms at most" % (
                                len(ms), fmt(row["scrapes"]["bytes"], 0),
                                fmt(row["scrapes"]["p50_ms"], 2),
                                fmt(row["scrapes"]["max_ms"], 2)))
        if failed:
            row["errors"].append("%d of %d scrapes failed (%s)" % (
                len(failed), len(failed) + len(ms), "; ".join(failed[:3])))
        if not ms:
            row["errors"].append("no scrape of /metrics worked")

    def note_busy(self, row, what, ticks0):
        """How busy the load core and the proxy core were during a run: a
        load core near 100% while the proxy core has time left means the
        rate measured the load side, not the proxy."""
        if self.load_cpus is None:
            return
        ticks = cpu_ticks()
        row["%s_load_core_busy" % what] = cpus_busy(ticks0, ticks, self.load_cpus)
        row["%s_proxy_core_busy" % what] = cpus_busy(ticks0, ticks, self.proxy_cpus)

    def tlsfwd_log_note(self, row, path):
        """With log_level = warn a clean run logs nothing per connection; say
        so when it did (e.g. failed handshakes)."""
        counts = collections.Counter()
        try:
            with open(path, errors="replace") as f:
                for line in f:
                    m = re.search(r"level=(warn|error) event=(\S+)", line)
                    if m:
                        r = re.search(r" (?:reason|stage)=(\S+)", line)
                        counts["%s %s%s" % (m.group(1), m.group(2),
                                            " " + r.group(1) if r else "")] += 1
        except OSError:
            return
        counts.pop("warn privileges", None)     # running as root: expected
        if counts:
            row["notes"].append("tlsfwd log: " + ", ".join("%s x%d" % kv
                                                           for kv in counts.most_common(4)))


# ---------------------------------------------------------------- report

def fmt(v, nd):
    if v is None:
        return "—"
    return "{:,.{}f}".format(v, nd)


COLUMNS = [("bulk down MB/s", "bulk_down_mbs", 0), ("bulk up MB/s", "bulk_up_mbs", 0),
           ("keep-alive req/s", "keepalive_rps", 0), ("keep-alive p99 ms", "keepalive_p99_ms", 2),
           ("new-conn req/s", "newconn_rps", 0), ("new-conn p99 ms", "newconn_p99_ms", 2),
           ("idle KiB/conn", "idle_kib_per_conn", 1)]


def get(rows, key, field):
    for r in rows:
        if r["key"] == key:
            return r.get(field)
    return None


def ratios(rows):
    out = []

    def ratio(name, a_key, b_key, field, unit):
        a, b = get(rows, a_key, field), get(rows, b_key, field)
        v = a / b if a is not None and b else None
        out.append({"name": name, "ratio": v, "a": a, "b": b, "a_row": a_key, "b_row": b_key,
                    "field": field, "unit": unit})

    ratio("tlsfwd / stunnel4, bulk down", "tlsfwd", "stunnel", "bulk_down_mbs", "MB/s")
    ratio("tlsfwd / stunnel4, bulk up", "tlsfwd", "stunnel", "bulk_up_mbs", "MB/s")
    ratio("tlsfwd / nginx stream, keep-alive req/s", "tlsfwd", "nginx-stream", "keepalive_rps", "req/s")
    ratio("tlsfwd / nginx stream, keep-alive p99", "tlsfwd", "nginx-stream", "keepalive_p99_ms", "ms")
    ratio("tlsfwd / nginx stream, new-conn req/s", "tlsfwd", "nginx-stream", "newconn_rps", "req/s")
    ratio("tlsfwd / nginx stream, new-conn p99", "tlsfwd", "nginx-stream", "newconn_p99_ms", "ms")
    ratio("tlsfwd workers=2 / workers=1, new-conn req/s", "tlsfwd-w2", "tlsfwd", "newconn_rps", "req/s")
    ratio("tlsfwd workers=2 / workers=1, new-conn req/s, full handshakes (session_cache=off)",
          "tlsfwd-nocache-w2", "tlsfwd-nocache", "newconn_rps", "req/s")
    ratio("tlsfwd / stunnel4, bulk down CPU per GB", "tlsfwd", "stunnel",
          "bulk_down_cpu_s_per_gb", "s")
    ratio("tlsfwd / stunnel4, bulk up CPU per GB", "tlsfwd", "stunnel",
          "bulk_up_cpu_s_per_gb", "s")
    ratio("tlsfwd / nginx stream, keep-alive CPU per request", "tlsfwd", "nginx-stream",
          "keepalive_cpu_us_per_req", "µs")
    ratio("tlsfwd / nginx stream, new-conn CPU per request", "tlsfwd", "nginx-stream",
          "newconn_cpu_us_per_req", "µs")
    return out


# What metrics on costs: the tlsfwd-metrics row against the tlsfwd row.
METRICS_COST = [("keep-alive CPU per request", "keepalive_cpu_us_per_req", "µs", 1),
                ("new-conn CPU per request", "newconn_cpu_us_per_req", "µs", 1),
                ("bulk down CPU per GB", "bulk_down_cpu_s_per_gb", "s", 2),
                ("bulk up CPU per GB", "bulk_up_cpu_s_per_gb", "s", 2),
                ("keep-alive req/s", "keepalive_rps", "req/s", 0),
                ("new-conn req/s", "newconn_rps", "req/s", 0)]


def metrics_cost(rows):
    """[{name, field, unit, on, off, diff, pct}]: metrics on (tlsfwd-metrics)
    against off (tlsfwd), or [] when the run had not both."""
    if get(rows, "tlsfwd-metrics", "key") is None or get(rows, "tlsfwd", "key") is None:
        return []
    out = []
    for name, field, unit, nd in METRICS_COST:
        on, off = get(rows, "tlsfwd-metrics", field), get(rows, "tlsfwd", field)
        both = on is not None and off is not None
        out.append({"name": name, "field": field, "unit": unit, "digits": nd,
                    "on": on, "off": off, "diff": on - off if both else None,
                    "pct": 100.0 * (on - off) / off if both and off else None})
    return out


def metrics_cost_lines(rows, cost):
    """The report's lines for metrics_cost(): each difference, then what one
    scrape costs and what that is per keep-alive request at one a second."""
    if not cost:
        return []
    lines = ["", "Metrics on against off (the `%s` row against `tlsfwd`, same run; the "
             "difference in tlsfwd's CPU per unit of work is the figure to read, rates "
             "follow the load core):" % get(rows, "tlsfwd-metrics", "label"), ""]
    for c in cost:
        if c["diff"] is None:
            lines.append("- %s: not measured" % c["name"])
            continue
        nd = c["digits"]
        sign = "+" if c["diff"] >= 0 else "−"
        pct = "" if c["pct"] is None else " (%s%.1f%%)" % (sign, abs(c["pct"]))
        lines.append("- %s: %s on vs %s %s off: **%s%s %s%s**" % (
            c["name"], fmt(c["on"], nd), fmt(c["off"], nd), c["unit"],
            sign, fmt(abs(c["diff"]), nd + 1), c["unit"], pct))
    sc = get(rows, "tlsfwd-metrics", "scrape_cost")
    if sc:
        per_s = sc["proxy_cpu_us_per_scrape"]
        rps = get(rows, "tlsfwd-metrics", "keepalive_rps")
        per_req = " = %s µs per keep-alive request at %s req/s" % (
            "{:.4f}".format(per_s / rps), fmt(rps, 0)) if rps else ""
        lines.append("- one scrape (%s bytes) costs tlsfwd **%s µs** of CPU (%d back to back, "
                     "idle proxy); at one a second that is %s µs of CPU per second%s" % (
                         fmt(sc["bytes"], 0), fmt(per_s, 1), sc["scrapes"],
                         fmt(per_s, 1), per_req))
    return lines


def markdown(meta, rows, rat):
    m = meta
    lines = ["### tlsfwd benchmark, %s" % m["date"], "",
             "Machine: %d cores (`nproc`), %s, Linux %s. Mode: %s: %d MiB bulk file, "
             "median of %d per direction; wrk -t1 -c%d -d%ds; %d idle connections." % (
                 m["nproc"], m["cpu"], m["kernel"], m["mode"], m["size_mib"], m["reps"],
                 m["conns"], m["duration_s"], m["idle_conns"]),
             "Pinning: %s." % m["pinning"], "",
             "| configuration | " + " | ".join(c[0] for c in COLUMNS) + " |",
             "|---|" + "---:|" * len(COLUMNS)]
    for r in rows:
        if r.get("skipped"):
            lines.append("| %s | " % r["label"] + " | ".join("—" for _ in COLUMNS)
                         + " |")
            continue
        mark = " (!)" if r["errors"] else ""
        lines.append("| %s%s | " % (r["label"], mark)
                     + " | ".join(fmt(r.get(c[1]), c[2]) for c in COLUMNS) + " |")
    cpu_rows = [r for r in rows if r.get("keepalive_cpu_us_per_req") is not None
                or r.get("newconn_cpu_us_per_req") is not None]
    if cpu_rows:
        lines += ["", "Proxy CPU time per GB during the bulk transfers and per request during the "
                  "wrk runs (user+system, all of the proxy's processes; lower is better; "
                  "counts even when the load core is the bottleneck), and the upstream "
                  "nginx's CPU time per request in the same runs (its share of the load core):",
                  "",
                  "| configuration | bulk down CPU s/GB | bulk up CPU s/GB "
                  "| keep-alive CPU µs/req | new-conn CPU µs/req "
                  "| upstream keep-alive µs/req | upstream new-conn µs/req |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for r in cpu_rows:
            lines.append("| %s | %s | %s | %s | %s | %s | %s |" % (
                r["label"], fmt(r.get("bulk_down_cpu_s_per_gb"), 2),
                fmt(r.get("bulk_up_cpu_s_per_gb"), 2),
                fmt(r.get("keepalive_cpu_us_per_req"), 1),
                fmt(r.get("newconn_cpu_us_per_req"), 1),
                fmt(r.get("keepalive_upstream_cpu_us_per_req"), 1),
                fmt(r.get("newconn_upstream_cpu_us_per_req"), 1)))
    busy_cols = [("bulk down", "bulk_down"), ("bulk up", "bulk_up"),
                 ("keep-alive", "keepalive"), ("new-conn", "newconn")]
    busy_rows = [r for r in rows if any(r.get("%s_load_core_busy" % k) is not None
                                        for _, k in busy_cols)]
    if busy_rows:
        lines += ["", "How busy each core was during each run, load core / proxy core in % "
                  "(`workers=2` rows are not pinned: there the numbers are CPU 0 / CPU 1, "
                  "both shared by the load and tlsfwd). A load core near 100% with "
                  "time left on the proxy core means the rate there is the load "
                  "side's ceiling, not the proxy's:", "",
                  "| configuration | " + " | ".join(c for c, _ in busy_cols) + " |",
                  "|---|" + "---:|" * len(busy_cols)]
        for r in busy_rows:
            cells = []
            for _, k in busy_cols:
                lo, px = r.get("%s_load_core_busy" % k), r.get("%s_proxy_core_busy" % k)
                cells.append("—" if lo is None else "%.0f / %.0f" % (100 * lo, 100 * px))
            lines.append("| %s | %s |" % (r["label"], " | ".join(cells)))
    lines += ["", "Ratios (tlsfwd against the peer; for p99 and CPU, lower is better):", ""]
    for x in rat:
        if x["ratio"] is None:
            lines.append("- %s: not measured" % x["name"])
        else:
            lines.append("- %s: **%.2f×** (%s vs %s %s)" % (
                x["name"], x["ratio"], fmt(x["a"], {"ms": 2, "µs": 1, "s": 2}.get(x["unit"], 0)),
                fmt(x["b"], {"ms": 2, "µs": 1, "s": 2}.get(x["unit"], 0)), x["unit"]))
    lines += metrics_cost_lines(rows, metrics_cost(rows))
    notes = []
    for r in rows:
        if r.get("skipped"):
            notes.append("%s: skipped: %s" % (r["label"], r["skipped"]))
        for e in r["errors"]:
            notes.append("%s (!): %s" % (r["label"], e))
        for n in r["notes"]:
            notes.append("%s: %s" % (r["label"], n))
    notes += m.get("notes", [])
    if notes:
        lines += ["", "Notes:", ""] + ["- " + n for n in notes]
    lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------- main

def run_meta(tlsfwd, **fields):
    """The report's "meta": date, machine, every peer's version, the run's
    own fields, and notes (empty)."""
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "nproc": os.cpu_count(), "kernel": os.uname().release, "cpu": "unknown"}
    meta.update(fields)
    meta.update({"versions": versions(tlsfwd), "notes": []})
    with open("/proc/cpuinfo") as f:
        m = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
        if m:
            meta["cpu"] = m.group(1).strip()
    return meta


def note_busy_before(meta):
    """How busy the CPUs were just before the run, with a note (and a
    warning) when anything else was running."""
    busy = cpu_busy()
    meta["cpu_busy_before"] = round(busy, 3)
    meta["loadavg_before"] = os.getloadavg()
    if busy > 0.10:
        meta["notes"].append("the machine was not idle: %.0f%% of the CPUs were busy just before "
                             "the run (load average %.1f); expect noisy numbers"
                             % (100 * busy, os.getloadavg()[0]))
        log("warning: " + meta["notes"][-1])


def save_report(out, name, md, data):
    """Print the markdown report and write it to OUT/NAME.md, and data (every
    number) to OUT/NAME.json."""
    print()
    print(md)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, name + ".json"), "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    with open(os.path.join(out, name + ".md"), "w") as f:
        f.write(md)
    log("wrote %s/%s.json and %s.md" % (os.path.relpath(out, os.getcwd()), name, name))


def parse_args():
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: 64 MiB, 1 transfer, 3 s wrk, 1000 idle (1-3 min)")
    p.add_argument("--big", action="store_true", help="50000 idle connections")
    p.add_argument("--size-mib", type=int, default=env("BENCH_SIZE_MIB"), help="bulk file MiB")
    p.add_argument("--reps", type=int, default=env("BENCH_REPS"), help="bulk transfers per direction")
    p.add_argument("--duration", type=int, default=env("BENCH_DURATION"), help="seconds per wrk run")
    p.add_argument("--conns", type=int, default=env("BENCH_CONNS"), help="wrk connections")
    p.add_argument("--idle", type=int, default=env("BENCH_IDLE"), help="idle connections")
    p.add_argument("--only", default=env("BENCH_ONLY"),
                   help="comma-separated row keys (see --list)")
    p.add_argument("--tlsfwd", default=env("TLSFWD", os.path.join(ROOT, "build", "tlsfwd")))
    p.add_argument("--no-install", action="store_true",
                   help="do not apt-get install missing peers; fail instead")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    p.add_argument("--out", default=RESULTS, help="results directory (default bench/results)")
    p.add_argument("--list", action="store_true", help="list the row keys and exit")
    a = p.parse_args()
    a.mode = "quick" if a.quick else ("big" if a.big else "default")
    defaults = {"size_mib": (256, 64), "reps": (3, 1), "duration": (10, 3), "conns": (32, 32),
                "idle": (50000 if a.big else 5000, 1000)}
    for k, (full, quick) in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, quick if a.quick else full)
        else:
            setattr(a, k, int(getattr(a, k)))
    a.only = [k.strip() for k in a.only.split(",") if k.strip()] if a.only else None
    if a.only:
        bad = [k for k in a.only if k not in dict(ROWS)]
        if bad:
            p.error("unknown row key(s) %s; known: %s" % (",".join(bad), ",".join(dict(ROWS))))
    return a


def main():
    a = parse_args()
    if a.list:
        for k, label in ROWS:
            print("%-14s %s" % (k, label))
        return 0
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    STATE["keep"] = a.keep
    a.tlsfwd = os.path.abspath(a.tlsfwd)
    if not os.access(a.tlsfwd, os.X_OK):
        die("%s is not built (make all)" % a.tlsfwd)
    install_peers(not a.no_install)

    meta = run_meta(a.tlsfwd, mode=a.mode, size_mib=a.size_mib, reps=a.reps,
                    duration_s=a.duration, conns=a.conns, idle_conns=a.idle)

    # A proxy holds two descriptors per idle connection; peers inherit this.
    a.nofile = raise_nofile(max(65536, 2 * a.idle + 16384))
    fit = (a.nofile - 1024) // 2
    if a.idle > fit:
        meta["notes"].append("RLIMIT_NOFILE cannot be raised above %d here, so the idle test "
                             "used %d connections instead of %d" % (a.nofile, fit, a.idle))
        log(meta["notes"][-1])
        a.idle = meta["idle_conns"] = fit
    if a.idle > 25000:
        w = widen_port_range(a.idle)
        if w:
            meta["notes"].append(w)

    note_busy_before(meta)

    tmp = pick_tmp(a.size_mib)
    STATE["tmp"] = tmp
    log("temp dir %s; generating PKI and a %d MiB file" % (tmp, a.size_mib))
    make_pki(os.path.join(tmp, "pki"))
    make_files(tmp, a.size_mib)

    b = Bench(a, tmp)
    # The bench process (and so curl, wrk and the upstream) on the load core.
    if b.load_cpus:
        os.sched_setaffinity(0, b.load_cpus)
        meta["pinning"] = ("load generator (curl, wrk, idle client) and upstream nginx on CPU %d; "
                           "each proxy alone on CPU %d (`workers=2` rows: all CPUs)"
                           % (min(b.load_cpus), min(b.proxy_cpus)))
    else:
        meta["pinning"] = "none (a single CPU): proxy, upstream and load generator share it"
    b.start_upstream()

    rows = []
    for key, _label in ROWS:
        if a.only and key not in a.only:
            continue
        log("== %s" % key)
        try:
            rows.append(b.measure(key))
        except RuntimeError as e:
            log("%s: ERROR %s" % (key, e))
            rows.append({"key": key, "label": dict(ROWS)[key], "errors": [str(e)], "notes": []})
        if b.upstream.poll() is not None:
            die("upstream nginx exited:\n" + tail(tmp + "/upstream-error.log"))

    meta["elapsed_s"] = round(time.monotonic() - T0)
    meta["loadavg_after"] = os.getloadavg()
    meta["notes"].append("whole run took %d s" % meta["elapsed_s"])
    rat = ratios(rows)
    save_report(a.out, "latest", markdown(meta, rows, rat),
                {"meta": meta, "columns": [{"title": c[0], "field": c[1]} for c in COLUMNS],
                 "rows": rows, "ratios": rat, "metrics_cost": metrics_cost(rows)})
    # Peers' problems are reported in the table; tlsfwd's fail the run.
    return 1 if any(r["errors"] for r in rows if r["key"].startswith("tlsfwd")) else 0


def run_main(fn):
    """fn()'s exit status, after cleanup() whatever happened."""
    try:
        return fn()
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(run_main(main))
