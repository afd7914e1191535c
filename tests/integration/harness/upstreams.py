"""Upstream servers on localhost: Python ssl (blocking socket or memory BIO,
BioConn), raw TCP, a silent holder, `openssl s_server`, and the handlers
they run (echo, duplex, streaming source)."""

import errno
import hashlib
import queue
import re
import select
import socket
import ssl
import subprocess
import threading
import time
import traceback

import pytest

from harness.clients import close_quietly
from harness.data import det_chunks
from harness.wrapper import SOCK_TIMEOUT


def server_context(cert, key, *, max_version=None, min_version=None, client_ca=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if max_version is not None:
        ctx.maximum_version = max_version
    if min_version is not None:
        ctx.minimum_version = min_version
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(client_ca)
    return ctx


class BioConn:
    """Server-side TLS over a raw socket through memory BIOs: full control of close_notify.

    recv() returns b'' on close_notify and raises TruncatedError on a TCP EOF
    without close_notify.
    """

    class TruncatedError(Exception):
        pass

    def __init__(self, raw, ctx, timeout=SOCK_TIMEOUT):
        self.raw = raw
        self.raw.settimeout(timeout)
        self.inc = ssl.MemoryBIO()
        self.out = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_side=True)
        self.tcp_eof = False
        self.got_close_notify = False

    def _flush(self):
        d = self.out.read()
        if d:
            self.raw.sendall(d)

    def _fill(self):
        if self.tcp_eof:
            raise BioConn.TruncatedError("TCP EOF without close_notify")
        d = self.raw.recv(65536)
        if not d:
            self.tcp_eof = True
            self.inc.write_eof()
        else:
            self.inc.write(d)

    def handshake(self):
        while True:
            try:
                self.obj.do_handshake()
                self._flush()
                return
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()

    def recv(self, n=65536):
        while True:
            try:
                d = self.obj.read(n)
                self._flush()
                if not d:
                    self.got_close_notify = True   # read() gives b'' on close_notify
                return d
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
            except ssl.SSLZeroReturnError:
                self.got_close_notify = True
                return b""
            except ssl.SSLEOFError as e:
                raise BioConn.TruncatedError(str(e))

    def recv_until_eof(self):
        buf = bytearray()
        while True:
            d = self.recv()
            if not d:
                return bytes(buf)
            buf += d

    def send(self, data):
        view = memoryview(data)
        for off in range(0, len(view), 16384):
            self.obj.write(view[off:off + 16384])
            self._flush()

    def send_close_notify(self):
        try:
            self.obj.unwrap()
        except ssl.SSLWantReadError:
            pass
        self._flush()

    def close(self):
        try:
            self.raw.close()
        except OSError:
            pass


def resolve_first(host, port):
    """The address tlsfwd tries first for upstream HOST:PORT, as it logs it
    ("127.0.0.1:P" or "[::1]:P"): getaddrinfo's first answer with tlsfwd's
    hints. Debian's /etc/hosts maps localhost to ::1 and 127.0.0.1, others
    only to 127.0.0.1: a test that names localhost expects what it resolves to."""
    ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICSERV)[0]
    if ai[0] == socket.AF_INET6:
        return "[%s]:%d" % (ai[4][0], port)
    return "%s:%d" % (ai[4][0], port)


def localhost_addresses():
    """The loopback addresses `localhost` resolves to here, in getaddrinfo's order."""
    out = []
    for ai in socket.getaddrinfo("localhost", 0, 0, socket.SOCK_STREAM):
        if ai[4][0] not in out:
            out.append(ai[4][0])
    return out


class LoopbackListener:
    """One TCP port listening on every address `localhost` resolves to (a socket
    per address), so that an upstream named localhost is reached at the first
    address tlsfwd tries, whatever this machine's /etc/hosts says. Only loopback
    addresses: nothing listens on the machine's other interfaces. The accept()
    / settimeout() / getsockname() / close() of one socket."""

    def __init__(self, backlog):
        addrs = [a for a in localhost_addresses() if a in ("127.0.0.1", "::1")] or ["127.0.0.1"]
        for _ in range(50):
            self.socks = []
            try:
                port = 0
                for a in list(addrs):
                    s = socket.socket(socket.AF_INET6 if ":" in a else socket.AF_INET,
                                      socket.SOCK_STREAM)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    if ":" in a:
                        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    try:
                        s.bind((a, port))
                    except OSError as e:
                        s.close()
                        if e.errno == errno.EADDRINUSE or len(addrs) == 1:
                            raise
                        addrs.remove(a)     # e.g. no ::1 in a fresh network namespace
                        continue
                    self.socks.append(s)
                    s.listen(backlog)
                    port = s.getsockname()[1]
                self.port = port
                break
            except OSError as e:
                for s in self.socks:
                    s.close()
                if e.errno != errno.EADDRINUSE:
                    raise
                # the first address's ephemeral port is taken on another: again
        else:
            raise AssertionError("no free port on all of %r" % addrs)
        self.timeout = None

    def settimeout(self, t):
        self.timeout = t

    def getsockname(self):
        return self.socks[0].getsockname()

    def fileno(self):
        return self.socks[0].fileno()

    def accept(self):
        try:
            ready, _, _ = select.select(self.socks, [], [], self.timeout)
        except (ValueError, OSError) as e:   # closed meanwhile
            raise OSError("listener closed") from e
        if not ready:
            raise socket.timeout("accept timed out")
        conn, addr = ready[0].accept()
        conn.setblocking(True)
        return conn, addr

    def close(self):
        for s in self.socks:
            s.close()


def listen_socket(backlog):
    """A TCP listener on localhost (LoopbackListener), ephemeral port, with a
    short accept timeout so that accept loops notice when they are asked to stop."""
    sock = LoopbackListener(backlog)
    sock.settimeout(0.2)
    return sock


def accept_loop(sock, stopped, on_accept):
    """Accept until stopped() or the socket is closed; hand each to on_accept."""
    while not stopped():
        try:
            conn, _ = sock.accept()
        except socket.timeout:
            continue
        except OSError:
            return
        on_accept(conn)


class Upstream:
    """A TCP server on localhost, ephemeral port (listen_socket); each connection gets a thread running handler(conn).

    mode 'ssl': conn is an ssl.SSLSocket (suppress_ragged_eofs=False, so a
                truncation raises instead of looking like EOF);
    mode 'bio': conn is a BioConn (handshake already done);
    mode 'raw': conn is the plain socket.
    Return values of handler go to self.results (a Queue); exceptions from the
    handshake to self.handshake_errors, from the handler to self.errors.
    """

    def __init__(self, handler, mode="ssl", ctx=None, backlog=512, sock=None):
        """sock: a listening socket to serve instead of a new one on localhost
        (e.g. made inside another network namespace by NetNs.call(listen_socket, n))."""
        self.handler = handler
        self.mode = mode
        self.ctx = ctx
        self.results = queue.Queue()
        self.errors = []
        self.handshake_errors = []
        self.accepted = 0
        self._conns = []
        self._threads = []
        self._stop = False
        self._lock = threading.Lock()
        self.sock = sock if sock is not None else listen_socket(backlog)
        self.port = self.sock.getsockname()[1]
        self._event = threading.Condition()
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._accept_thread.start()

    def _accept_loop(self):
        accept_loop(self.sock, lambda: self._stop, self._start_serving)

    def _start_serving(self, raw):
        with self._lock:
            self.accepted += 1
            self._conns.append(raw)
        t = threading.Thread(target=self._serve, args=(raw,), daemon=True)
        self._threads.append(t)
        t.start()

    def _serve(self, raw):
        conn = raw
        try:
            # close() may have closed raw already (a test ending while this
            # thread starts): that is a failed handshake, not a crash
            raw.settimeout(SOCK_TIMEOUT)
            if self.mode == "ssl":
                conn = self.ctx.wrap_socket(raw, server_side=True, suppress_ragged_eofs=False)
                with self._lock:
                    self._conns.append(conn)
            elif self.mode == "bio":
                conn = BioConn(raw, self.ctx)
                conn.handshake()
        except Exception as e:  # noqa: BLE001
            with self._event:
                self.handshake_errors.append(e)
                self._event.notify_all()
            close_quietly(raw)
            return
        try:
            res = self.handler(conn)
            self.results.put(res)
        except Exception as e:  # noqa: BLE001
            with self._event:
                self.errors.append((e, traceback.format_exc()))
                self._event.notify_all()
        finally:
            close_quietly(conn)
            close_quietly(raw)

    def wait_handshake_error(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        with self._event:
            while not self.handshake_errors:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("the upstream saw no failed handshake within %.1fs"
                                         % timeout)
                self._event.wait(left)
            return self.handshake_errors[0]

    def result(self, timeout=10.0):
        try:
            return self.results.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("upstream handler produced no result within %.1fs; errors=%r"
                                 % (timeout, self.errors))

    def close(self):
        self._stop = True
        close_quietly(self.sock)
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            close_quietly(c)
        self._accept_thread.join(2)
        for t in self._threads:
            t.join(2)


def echo_handler(conn):
    """Echo until EOF (close_notify), then send close_notify and close; returns bytes echoed."""
    total = 0
    while True:
        d = conn.recv(65536)
        if not d:
            break
        conn.sendall(d)
        total += len(d)
    conn.unwrap()
    return total


class SilentHolder:
    """Plain TCP listener that accepts and never answers (holds sockets until close())."""

    def __init__(self):
        self.sock = listen_socket(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.received = bytearray()
        self._stop = False
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self):
        accept_loop(self.sock, lambda: self._stop, self.conns.append)

    def close(self):
        self._stop = True
        close_quietly(self.sock)
        self._t.join(2)
        for c in self.conns:
            close_quietly(c)


_REFUSING = []      # held for the whole session: see refusing_port


def refusing_port():
    """A port on 127.0.0.1 that refuses connections for the rest of the
    session: a socket is bound to it without listening (and without
    SO_REUSEADDR), so no listener, tlsfwd's port-0 ones included, can be
    given it meanwhile, as can happen to a closed_port()."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    _REFUSING.append(s)
    return s.getsockname()[1]


def closed_port():
    """A port nothing listens on now, on any address localhost resolves to:
    for a test to listen on later (an upstream that refuses for good is
    refusing_port())."""
    s = LoopbackListener(1)
    port = s.port
    s.close()
    return port


class OpenSSLServer:
    """`openssl s_server -accept 0 ...`; port parsed from its `ACCEPT ...:PORT` line."""

    def __init__(self, cert, key, *extra, chain=None, timeout=10.0, accept=0):
        args = ["openssl", "s_server", "-accept", str(accept), "-cert", cert, "-key", key]
        if chain:
            args += ["-cert_chain", chain]
        args += list(extra)
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.lines = []
        self._cond = threading.Condition()
        self._eof = False
        self._t = threading.Thread(target=self._drain, daemon=True)
        self._t.start()
        self.port = None
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.port is None:
                for ln in self.lines:
                    m = re.match(r"^ACCEPT\s+(?:\S*):(\d+)\s*$", ln)
                    if m:
                        self.port = int(m.group(1))
                        break
                    if accept and ln.strip() == "ACCEPT":   # a given port is not echoed
                        self.port = int(accept)
                        break
                if self.port is not None:
                    break
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    self.close()
                    raise AssertionError("openssl s_server did not start:\n" + "\n".join(self.lines))
                self._cond.wait(left)

    def _drain(self):
        for raw in iter(self.proc.stdout.readline, b""):
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_line(self, substr, timeout=5.0):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for ln in self.lines:
                    if substr in ln:
                        return ln
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    raise AssertionError("s_server never printed %r:\n%s"
                                         % (substr, "\n".join(self.lines)))
                self._cond.wait(left)

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._t.join(2)


def make_duplex_handler(send_seed, send_total, deadline_s=90.0):
    """BIO-mode handler: sends `send_total` deterministic bytes while hashing all
    it receives; once both its sending is done and close_notify has arrived,
    sends close_notify and closes. Returns (bytes_received, sha256_hex).
    Single-threaded select loop, so reading and writing really overlap."""
    def handler(bc):
        raw = bc.raw
        raw.setblocking(False)
        h = hashlib.sha256()
        got = 0
        gen = det_chunks(send_seed, send_total)
        outbuf = bytearray(bc.out.read())
        peer_done = sent_all = False
        deadline = time.monotonic() + deadline_s
        while not (peer_done and sent_all and not outbuf):
            if time.monotonic() > deadline:
                raise TimeoutError("duplex transfer: got %d bytes, peer_done=%s sent_all=%s"
                                   % (got, peer_done, sent_all))
            while not sent_all and len(outbuf) < (1 << 20):
                chunk = next(gen, None)
                if chunk is None:
                    sent_all = True
                    break
                for off in range(0, len(chunk), 16384):
                    bc.obj.write(chunk[off:off + 16384])
                outbuf += bc.out.read()
            r, w, _ = select.select([] if peer_done else [raw], [raw] if outbuf else [], [], 1.0)
            if w:
                try:
                    n = raw.send(outbuf)
                    del outbuf[:n]
                except BlockingIOError:
                    pass
            if r:
                try:
                    d = raw.recv(1 << 18)
                except BlockingIOError:
                    continue
                if not d:
                    raise BioConn.TruncatedError("TCP EOF without close_notify after %d bytes" % got)
                bc.inc.write(d)
                while True:
                    try:
                        x = bc.obj.read(1 << 18)
                    except ssl.SSLWantReadError:
                        break
                    except ssl.SSLZeroReturnError:
                        peer_done = True
                        break
                    if not x:
                        peer_done = True
                        break
                    h.update(x)
                    got += len(x)
                outbuf += bc.out.read()
        raw.settimeout(SOCK_TIMEOUT)
        bc.send_close_notify()
        return got, h.hexdigest()
    return handler


class StreamSource:
    """BIO-mode upstream handler (ssl_upstream(..., mode="bio")) that streams
    `total` bytes of det_chunks(seed) in `step`-byte writes, counting in
    self.sent what it handed to the socket, then sends close_notify. Returns
    "sent all", or "stopped" when the peer went away first."""

    def __init__(self, seed, total, step=1 << 16):
        self.seed, self.total, self.step = seed, total, step
        self.sent = 0

    def __call__(self, bc):
        try:
            for chunk in det_chunks(self.seed, self.total):
                for off in range(0, len(chunk), self.step):
                    bc.send(chunk[off:off + self.step])
                    self.sent += len(chunk[off:off + self.step])
            bc.send_close_notify()
        except (OSError, BioConn.TruncatedError):
            return "stopped"
        return "sent all"


def syn_dropping_listener(cleanup, host="127.0.0.1", port=0):
    """A listener on host:port whose accept queue is full, so further SYNs
    are dropped and connect() hangs (a blackholed path); its port. Skips the
    test when the kernel does not behave so."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    ls = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_INET6:
        ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        ls.bind((host, port))
    except OSError as e:
        ls.close()
        pytest.skip("cannot listen on %s port %d: %s" % (host, port, e))
    ls.listen(0)
    cleanup.append(ls)
    port = ls.getsockname()[1]
    for _ in range(4):
        c = socket.socket(family, socket.SOCK_STREAM)
        c.settimeout(0.3)
        try:
            c.connect((host, port))
            cleanup.append(c)
        except socket.timeout:
            c.close()
            return port
    pytest.skip("cannot make a loopback connect() hang on this kernel")
