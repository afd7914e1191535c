"""Running tlsfwd behind TLSFWD_WRAPPER (`make valgrind`): the command wrapper,
the check of its report, the sanitizer markers, and the slow-down factor
TLSFWD_SLOW that scales the waits for tlsfwd (SOCK_TIMEOUT)."""

import os
import re
import shlex
import signal
import tempfile


SANITIZER_MARKERS = (b"ERROR: AddressSanitizer", b"runtime error:", b"LeakSanitizer")

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
