#!/usr/bin/env python3
"""Instruction profile of tlsfwd's per-connection paths, under callgrind.

callgrind counts instructions, not seconds: the counts repeat for the same
binary and workload whatever else the machine does, so they show what a change
saves where wall-clock benchmarks on a busy 2-core box cannot.

Workloads (each against a local TLS 1.3 echo upstream with session tickets,
in a fresh tlsfwd under `valgrind --tool=callgrind`):

  newconn   N client connections, each: connect, 100 bytes up, 100 back, close
            (session_cache = yes, so upstream TLS sessions are resumed)
  newconn-nocache   the same with session_cache = no (full handshakes)
  keepalive one connection, N round trips of 100 bytes
  bulk      one connection, SIZE MiB through the proxy each way

The report gives instructions per connection / round trip / byte, and the
functions with the most exclusive instructions. Usage:

  python3 bench/profile.py [--tlsfwd build/tlsfwd] [--n 300] [--size-mib 16]
  make profile
"""

import argparse
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import pki as pki_mod  # noqa: E402


def echo_server(ctx):
    """A threaded TLS echo server on 127.0.0.1:0; returns its port."""
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(512)

    def serve(raw):
        try:
            with ctx.wrap_socket(raw, server_side=True) as s:
                while True:
                    data = s.recv(1 << 16)
                    if not data:
                        break
                    s.sendall(data)
        except (OSError, ssl.SSLError):
            pass

    def loop():
        while True:
            raw, _ = ls.accept()
            threading.Thread(target=serve, args=(raw,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return ls.getsockname()[1]


EXTRA = ""     # more service keys (--extra)
LOG_LEVEL = "warn"  # --log-level


def start_tlsfwd(binary, tmp, name, upstream_port, ca, session_cache):
    conf = os.path.join(tmp, name + ".ini")
    with open(conf, "w") as f:
        f.write("[global]\nlog_level = %s\n[p]\nlisten = 127.0.0.1:0\n"
                "upstream = localhost:%d\nca_file = %s\nsession_cache = %s\n"
                "idle_timeout = 60s\n%s" % (LOG_LEVEL, upstream_port, ca, session_cache, EXTRA))
    out = os.path.join(tmp, name + ".callgrind")
    # The log goes to a file: a pipe nobody reads would fill and stall tlsfwd.
    # log_level = warn hides event=listening: take the port from /proc instead.
    log = open(os.path.join(tmp, name + ".log"), "w+b")
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                             binary, "-c", conf], stderr=log, stdout=subprocess.DEVNULL)
    proc.log = log
    port = wait_listen_port(proc.pid, proc)
    return proc, out, port


def wait_listen_port(pid, proc, timeout=60.0):
    """The TCP port the process listens on (from /proc/net/tcp and its fds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            proc.log.seek(0)
            sys.exit("tlsfwd exited: %s" % proc.log.read().decode(errors="replace"))
        inodes = set()
        try:
            for fd in os.listdir("/proc/%d/fd" % pid):
                m = re.match(r"socket:\[(\d+)\]", os.readlink("/proc/%d/fd/%s" % (pid, fd)))
                if m:
                    inodes.add(m.group(1))
        except OSError:
            pass
        with open("/proc/net/tcp") as f:
            for ln in f.readlines()[1:]:
                p = ln.split()
                if p[3] == "0A" and p[9] in inodes:
                    return int(p[1].split(":")[1], 16)
        time.sleep(0.2)     # valgrind start-up takes seconds; nothing to wait on
    sys.exit("tlsfwd did not listen within %.0fs" % timeout)


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        d = s.recv(n - len(buf))
        if not d:
            raise EOFError("closed after %d of %d bytes" % (len(buf), n))
        buf += d
    return bytes(buf)


def run_newconn(port, n):
    msg = b"x" * 100
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(msg)
            assert recv_exact(s, 100) == msg


def run_keepalive(port, n):
    msg = b"k" * 100
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        for _ in range(n):
            s.sendall(msg)
            assert recv_exact(s, 100) == msg


def run_bulk(port, size):
    chunk = os.urandom(1 << 16)
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        got = [0]

        def reader():
            while got[0] < size:
                d = s.recv(1 << 18)
                if not d:
                    break
                got[0] += len(d)
        t = threading.Thread(target=reader)
        t.start()
        sent = 0
        while sent < size:
            s.sendall(chunk)
            sent += len(chunk)
        t.join(120)
        assert got[0] == size, (got[0], size)


def annotate(out, top):
    """(total Ir, [(Ir, function)]) from callgrind_annotate."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=no", out], check=True,
                          capture_output=True, text=True).stdout
    total = None
    rows = []
    for ln in text.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\(.*?\)\s+PROGRAM TOTALS", ln)
        if m:
            total = int(m.group(1).replace(",", ""))
            continue
        m = re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(\S.*)$", ln)
        if m and total is not None:
            fn = m.group(2)
            fn = re.sub(r"^.*?:", "", fn, count=1) if ":" in fn else fn
            fn = re.sub(r"\s*\[.*\]$", "", fn)
            rows.append((int(m.group(1).replace(",", "")), fn))
    return total, rows[:top]


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tlsfwd", default=os.path.join(ROOT, "build", "tlsfwd"))
    ap.add_argument("--n", type=int, default=300, help="connections / round trips")
    ap.add_argument("--size-mib", type=int, default=16)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--only", help="comma-separated workloads")
    ap.add_argument("--keep", action="store_true", help="keep the callgrind files (path printed)")
    ap.add_argument("--extra", default="", help="service keys to add, e.g. 'tls_priority = ...'")
    ap.add_argument("--log-level", default="warn",
                    help="tlsfwd's log_level (warn: no per-connection lines; info: two per connection)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "profile.md"))
    args = ap.parse_args()
    global EXTRA, LOG_LEVEL
    LOG_LEVEL = args.log_level
    EXTRA = args.extra.replace("\\n", "\n") + ("\n" if args.extra else "")
    if shutil.which("valgrind") is None or shutil.which("callgrind_annotate") is None:
        sys.exit("profile: needs valgrind (apt-get install valgrind)")
    tmp = tempfile.mkdtemp(prefix="tlsfwd-profile-")
    try:
        p = pki_mod.make_pki(os.path.join(tmp, "pki"))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(p["server"], p["server_key"])
        # Follow the client's cipher order, as nginx (the benchmark's
        # upstream) does by default; Python's server contexts prefer their own.
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
        up = echo_server(ctx)
        size = args.size_mib << 20
        work = [
            ("newconn", "yes", lambda port: run_newconn(port, args.n), args.n, "connection"),
            ("newconn-nocache", "no", lambda port: run_newconn(port, args.n), args.n,
             "connection"),
            ("keepalive", "yes", lambda port: run_keepalive(port, args.n), args.n, "round trip"),
            ("bulk", "yes", lambda port: run_bulk(port, size), 2 * size, "byte relayed"),
        ]
        # A baseline: start, one connection, stop; subtracted from each run.
        proc, out, port = start_tlsfwd(args.tlsfwd, tmp, "base", up, p["ca"], "yes")
        run_newconn(port, 1)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        base, _ = annotate(out, 0)
        lines = ["# tlsfwd instruction profile (callgrind)", "",
                 "`python3 bench/profile.py --n %d --size-mib %d` on %s; tlsfwd %s; "
                 "baseline (start, 1 connection, stop): %s instructions, subtracted."
                 % (args.n, args.size_mib, time.strftime("%Y-%m-%d"),
                    subprocess.run([args.tlsfwd, "-V"], capture_output=True,
                                   text=True).stdout.strip(), format(base, ",")), ""]
        summary = ["| workload | instructions | per unit |", "|---|---|---|"]
        details = []
        if args.only:
            work = [w for w in work if w[0] in args.only.split(",")]
        for name, cache, fn, units, unit in work:
            proc, out, port = start_tlsfwd(args.tlsfwd, tmp, name, up, p["ca"], cache)
            fn(port)
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
            total, rows = annotate(out, args.top)
            per = (total - base) / units
            summary.append("| %s | %s | %s per %s |" % (name, format(total, ","),
                                                       format(round(per, 2), ","), unit))
            details += ["", "## %s: top functions (exclusive instructions)" % name, "",
                        "| instructions | share | function |", "|---|---|---|"]
            details += ["| %s | %.1f%% | `%s` |" % (format(ir, ","), 100.0 * ir / total, f)
                        for ir, f in rows]
            print("%-16s %15s instructions, %12s per %s" % (name, format(total, ","),
                                                             format(round(per, 2), ","), unit))
        text = "\n".join(lines + summary + details) + "\n"
        with open(args.out, "w") as f:
            f.write(text)
        print("wrote %s" % args.out)
    finally:
        if args.keep:
            print("kept %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
