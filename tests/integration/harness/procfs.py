"""What /proc says about a running process: its status fields, resident
memory, and the TCP sockets it listens on."""

import os
import re


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


def rss_kib(pid):
    """VmRSS of process pid in KiB (0 if it has none)."""
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    return 0
