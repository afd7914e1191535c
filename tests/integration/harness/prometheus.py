"""A real Prometheus server started by a test (Debian package prometheus):
its own directory (prometheus.yml, storage in data/, output in
prometheus.log), its web listener on 127.0.0.1:0 (the port the kernel gave
it is read back from its log), ready once GET /-/ready answers 200. Never
the packaged system service (:9090, /var/lib/prometheus): nothing of it is
used or touched.

Use it as a context manager: it is stopped (SIGTERM, then SIGKILL) and its
storage removed on every way out of the block, and the kernel kills it if
the test process itself dies first (PR_SET_PDEATHSIG)."""

import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from harness.daemon import child_env
from harness.servers import stop_process

START_TIMEOUT = 30.0
LISTENING = re.compile(r'msg="Listening on" address=127\.0\.0\.1:(\d+)')
PR_SET_PDEATHSIG = 1


def need(tool):
    """The path of a tool of the prometheus package; a failure (not a skip)
    without it: `make deps` installs it."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail("%s is not installed (Debian package prometheus): run `make deps`" % tool,
                    pytrace=False)
    return path


def _die_with_parent():
    # In the child between fork and exec: killed when the test process dies.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Prometheus:
    """Prometheus scraping `targets` (HOST:PORT) as job `job` every
    `interval`. started: time.monotonic() at the start; ready_after: seconds
    from the start to the first 200 of /-/ready."""

    def __init__(self, directory, targets, job="tlsfwd", interval="1s"):
        self.dir, self.port, self.ready_after = str(directory), None, None
        self.config = os.path.join(self.dir, "prometheus.yml")
        self.data = os.path.join(self.dir, "data")
        self.log_path = os.path.join(self.dir, "prometheus.log")
        with open(self.config, "w") as f:
            f.write("global:\n  scrape_interval: %s\n  scrape_timeout: %s\n"
                    "scrape_configs:\n  - job_name: %s\n    static_configs:\n"
                    "      - targets: [%s]\n"
                    % (interval, interval, job, ", ".join("'%s'" % t for t in targets)))
        self._log = open(self.log_path, "ab")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [need("prometheus"), "--config.file=" + self.config,
             "--storage.tsdb.path=" + self.data,
             "--web.listen-address=127.0.0.1:0",
             "--web.external-url=http://127.0.0.1/"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            cwd=self.dir, env=child_env(), start_new_session=True,
            preexec_fn=_die_with_parent)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def log_tail(self, n=30):
        with open(self.log_path, "rb") as f:
            return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])

    def _alive(self, deadline, what):
        assert self.proc.poll() is None, "prometheus exited (rc=%s) before %s:\n%s" % (
            self.proc.returncode, what, self.log_tail())
        assert time.monotonic() < deadline, "prometheus: no %s within %.0f s:\n%s" % (
            what, deadline - self.started, self.log_tail())

    def wait_ready(self, timeout=START_TIMEOUT):
        """The port from the log's `Listening on`, then /-/ready polled to a 200."""
        deadline = self.started + timeout
        while self.port is None:
            self._alive(deadline, "listening port in its log")
            with open(self.log_path, "rb") as f:
                m = LISTENING.search(f.read().decode("utf-8", "replace"))
            if m:
                self.port = int(m.group(1))
            else:
                time.sleep(0.02)
        while True:
            self._alive(deadline, "200 from /-/ready")
            try:
                if self._get("/-/ready")[0] == 200:
                    break
            except OSError:         # refused, or 503 while it starts
                pass
            time.sleep(0.02)
        self.ready_after = time.monotonic() - self.started
        return self

    def _get(self, path):
        url = "http://127.0.0.1:%d%s" % (self.port, path)
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()

    def api(self, path, **params):
        """The data of a /api/v1 answer whose status is success."""
        query = "?" + urllib.parse.urlencode(params) if params else ""
        status, body = self._get("/api/v1/" + path + query)
        doc = json.loads(body)
        assert status == 200 and doc["status"] == "success", body
        return doc["data"]

    def query(self, expr):
        """The instant vector of expr: [(labels, value)]."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def targets(self):
        return self.api("targets")["activeTargets"]

    def close(self):
        stop_process(self.proc)
        self._log.close()
        shutil.rmtree(self.data, ignore_errors=True)
