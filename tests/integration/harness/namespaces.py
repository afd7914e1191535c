"""Linux namespaces the tests run tlsfwd in (root only): a network namespace
with a black hole (NetNs) and a private /etc/hosts (with_hosts)."""

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
