"""Linux namespaces the tests run tlsfwd in (root only): a network namespace
with a black hole (NetNs) and a private /etc/hosts (with_hosts). `make
bench-wan` (bench/wan.py) uses NetNs too, without the black hole, and
setns() to move its own thread into one."""

import os
import subprocess
import threading


def with_hosts(path):
    """argv wrapper factory: run cmd in its own mount namespace with the file
    at path over /etc/hosts (root only), so that a test decides what a name
    resolves to and in which order."""
    def wrap(cmd):
        return ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                'mount --bind "$0" /etc/hosts && exec "$@"', path] + list(cmd)
    return wrap


def setns(path):
    """Move the calling thread into the network namespace whose file is path
    (/run/netns/NAME, /proc/self/ns/net); what it creates after (sockets,
    threads, child processes) lives there."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, 0x40000000) != 0:          # CLONE_NEWNET
            err = ctypes.get_errno()
            raise OSError(err, "setns %s: %s" % (path, os.strerror(err)))
    finally:
        os.close(fd)


class NetNs:
    """A throw-away network namespace (`ip netns add`, needs root) named
    PREFIX-PID-N, with lo up and, unless blackhole=False, a black hole: TCP
    SYNs to BLACKHOLE (TEST-NET-1) leave through a veth whose peer, in the
    same namespace, has no address and does not forward, so they get no
    answer at all (no RST, no ICMP): connect() just hangs.

    path: its file, for setns() or a program that joins it itself.
    ip(*args): `ip -n NAME ARGS...`, OSError with ip's message on failure.
    wrap(cmd): argv wrapper running cmd inside (`ip netns exec`).
    call(fn, *args): fn(*args) in a thread that joined the namespace, so the
    sockets fn creates (listeners, clients) live in it; returns fn's result."""

    BLACKHOLE = "192.0.2.1"
    _count = 0

    def __init__(self, prefix="tlsfwd-test", blackhole=True):
        NetNs._count += 1
        self.name = "%s-%d-%d" % (prefix, os.getpid(), NetNs._count)
        self.path = "/run/netns/" + self.name
        self._ip("netns", "add", self.name)
        try:
            self.ip("link", "set", "lo", "up")
            if blackhole:
                self._blackhole()
        except BaseException:
            self.close()
            raise

    def _blackhole(self):
        self.ip("link", "add", "bh0", "type", "veth", "peer", "name", "bh1")
        self.ip("link", "set", "bh0", "up")
        self.ip("link", "set", "bh1", "up")
        self.ip("addr", "add", "198.51.100.1/24", "dev", "bh0")
        mac = self.ip("-br", "link", "show", "bh1").split()[2]
        self.ip("neigh", "add", self.BLACKHOLE, "lladdr", mac, "dev", "bh0", "nud", "permanent")
        self.ip("route", "add", self.BLACKHOLE + "/32", "dev", "bh0")

    @staticmethod
    def _ip(*args):
        r = subprocess.run(["ip"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=30)
        if r.returncode != 0:
            raise OSError("ip %s: %s" % (" ".join(args), r.stderr.decode(errors="replace").strip()))
        return r.stdout.decode()

    def ip(self, *args):
        return self._ip("-n", self.name, *args)

    def wrap(self, cmd):
        return ["ip", "netns", "exec", self.name] + list(cmd)

    def call(self, fn, *args):
        box = {}

        def run():
            try:
                setns(self.path)
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
