"""Real servers started by tests on a free loopback port, each in its own
directory with its output in DIR/server.log, stopped with SIGTERM."""

import os
import signal
import socket
import ssl
import subprocess
import time

import pytest

from harness.daemon import child_env

START_TIMEOUT = 15.0


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process whose output goes to DIR/server.log; ready once a TLS
    handshake to 127.0.0.1:port succeeds (ready="tls") or a TCP connection
    is taken (ready="tcp": a proxy, or a TLS server that wants a PROXY
    header first)."""

    def __init__(self, name, argv, directory, port, pki, env=None, ready="tls"):
        self.name, self.dir, self.port, self.ready = name, directory, port, ready
        self.log_path = os.path.join(directory, "server.log")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=directory,
                                     env=child_env(env), start_new_session=True)
        self.ctx = ssl.create_default_context(cafile=pki["ca"])
        self.ctx.load_cert_chain(pki["client"], pki["client_key"])

    def log_tail(self, n=30):
        with open(self.log_path, "rb") as f:
            return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])

    def wait_ready(self, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        last = None
        while True:
            if self.proc.poll() is not None:
                return "exited with rc=%s: %s" % (self.proc.returncode, self.log_tail())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as raw:
                    if self.ready == "tcp":
                        return None
                    with self.ctx.wrap_socket(raw, server_hostname="localhost"):
                        return None
            except (OSError, ssl.SSLError) as e:
                last = e
            if time.monotonic() > deadline:
                self.close()
                pytest.fail("%s not ready on port %d within %gs (%s):\n%s"
                            % (self.name, self.port, timeout, last, self.log_tail()),
                            pytrace=False)
            time.sleep(0.05)

    def close(self):
        stop_process(self.proc)
        self._log.close()


def stop_process(proc):
    """SIGTERM, then SIGKILL after 10 s; waits for it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def start_server(name, directory, pki, make_argv, env=None, tries=3, ready="tls"):
    """Start make_argv(port) on a free port; another port if the process dies
    before it is ready (the port was taken meanwhile)."""
    errors = []
    for _ in range(tries):
        port = free_port()
        srv = Server(name, make_argv(port), directory, port, pki, env, ready)
        err = srv.wait_ready()
        if err is None:
            return srv
        srv.close()
        errors.append("port %d: %s" % (port, err))
    pytest.fail("%s did not start:\n%s" % (name, "\n".join(errors)), pytrace=False)
