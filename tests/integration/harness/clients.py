"""Plain TCP clients of tlsfwd, with timeouts everywhere: connect, read
exactly / to EOF / to the close, reset, and whole exchanges through tlsfwd
(echo_once, exchange_ok, www_fetch, assert_refused_through)."""

import socket

from harness.logfmt import num
from harness.wrapper import SOCK_TIMEOUT


def connect(port, timeout=SOCK_TIMEOUT, host="127.0.0.1"):
    s = socket.create_connection((host, port), timeout=timeout)
    s.settimeout(timeout)
    return s


def connect_unix(path, timeout=SOCK_TIMEOUT):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    return s


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        d = sock.recv(min(65536, n - len(buf)))
        if not d:
            raise AssertionError("EOF after %d of %d bytes" % (len(buf), n))
        buf += d
    return bytes(buf)


def recv_all(sock, limit=1 << 30):
    """Read until EOF; returns bytes. A reset raises."""
    buf = bytearray()
    while True:
        d = sock.recv(65536)
        if not d:
            return bytes(buf)
        buf += d
        if len(buf) > limit:
            raise AssertionError("more than %d bytes" % limit)


def send_quiet(sock, data):
    """Send, tolerating a peer that already closed (the close is what is tested)."""
    try:
        sock.sendall(data)
        return True
    except (BrokenPipeError, ConnectionResetError):
        return False


def recv_closed(sock):
    """Read until the peer closes; returns (data, how) with how 'eof' or 'reset'."""
    buf = bytearray()
    while True:
        try:
            d = sock.recv(65536)
        except ConnectionResetError:
            return bytes(buf), "reset"
        if not d:
            return bytes(buf), "eof"
        buf += d


def close_quietly(s):
    try:
        s.close()
    except OSError:
        pass


HTTP_REQUEST = b"GET / HTTP/1.0\r\n\r\n"


def www_fetch(sock):
    """HTTP/1.0 GET through tlsfwd to an `openssl s_server -www`; returns the page.
    The client then half-closes as HTTP/1.0 clients do."""
    sock.sendall(HTTP_REQUEST)
    page = recv_all(sock)
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    return page


def assert_refused_through(fwd, sock):
    """The client of a refused handshake gets no upstream byte and a closed
    connection; returns (handshake record, close record)."""
    send_quiet(sock, HTTP_REQUEST)
    data, _how = recv_closed(sock)
    assert data == b"", "upstream bytes were relayed despite a refused handshake: %r" % data[:80]
    hs = fwd.conn_of(sock)
    cl = fwd.wait_close(hs["conn"])
    assert cl["reason"] == "handshake_failed", (hs, cl)
    assert num(cl["bytes_down"]) == 0, cl
    return hs, cl


def echo_once(port, data=b"ping", timeout=5):
    """One connection through tlsfwd to an echo upstream: send, read it back,
    half-close, and see the clean end."""
    s = connect(port, timeout)
    try:
        s.sendall(data)
        assert recv_exact(s, len(data)) == data
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b""
    finally:
        s.close()


def reset_close(sock):
    """Close with SO_LINGER 0: the peer gets a TCP RST instead of a FIN."""
    import struct
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def exchange_ok(fwd, service="svc", data=b"ping", dial=None):
    """One healthy connection through the running tlsfwd `fwd` to an echo
    upstream: send `data`, get exactly it back, half-close, see the clean end;
    and its log lines say result=ok and reason=done with the byte counts.
    dial: function(port) -> connected socket (default: connect() on 127.0.0.1).
    Returns (handshake record, close record)."""
    s = (dial or connect)(fwd.ports[service])
    if s.family != socket.AF_UNIX:
        # as the client fixture does: Linux reuses a source port at once for
        # a connection to another listener, so the service tells them apart
        fwd.client_service[(s.getsockname()[:2], s.getpeername()[:2])] = service
    try:
        s.sendall(data)
        got = recv_exact(s, len(data))
        assert got == data, "echo differs from the %d bytes sent" % len(data)
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b""
        hs = fwd.conn_of(s)
    finally:
        s.close()
    cl = fwd.wait_close(hs["conn"])
    assert hs["result"] == "ok" and hs["service"] == service, hs
    assert cl["reason"] == "done", cl
    assert (num(cl["bytes_up"]), num(cl["bytes_down"])) == (len(data), len(data)), cl
    return hs, cl
