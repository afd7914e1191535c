"""Half-close in both directions: a FIN from the client becomes a close_notify
to the upstream and vice versa, while the other direction keeps flowing."""

import hashlib
import socket

from harness.clients import recv_all
from harness.data import det_bytes
from harness.logfmt import num


def test_client_half_close_then_upstream_answers(ssl_upstream, service, start_tlsfwd, client):
    """(a) client sends, shuts down its write side; the upstream reads up to the
    close_notify, only then answers with 1 MiB and closes; the client gets it all."""
    request = det_bytes("request", 100000)
    response_size = 1 << 20

    def handler(bc):
        got = bc.recv_until_eof()          # raises on a TCP EOF without close_notify
        assert bc.got_close_notify
        bc.send(hashlib.sha256(got).hexdigest().encode() + b"\n")
        bc.send(det_bytes("response", response_size))
        bc.send_close_notify()
        return got

    up = ssl_upstream(handler, mode="bio")
    fwd = start_tlsfwd({"svc": service(up.port)})
    s = client(fwd)
    s.sendall(request)
    s.shutdown(socket.SHUT_WR)
    data = recv_all(s)
    assert up.result() == request
    assert not up.errors, up.errors
    want = hashlib.sha256(request).hexdigest().encode() + b"\n" + \
        det_bytes("response", response_size)
    assert len(data) == len(want) and data == want
    cl = fwd.wait_close(fwd.conn_of(s)["conn"])
    assert cl["reason"] == "done", cl
    assert (num(cl["bytes_up"]), num(cl["bytes_down"])) == (len(request), len(want)), cl


def test_upstream_half_close_client_keeps_sending(ssl_upstream, service, start_tlsfwd, client):
    """(b) the upstream sends data then close_notify while still reading; the
    client gets the data then EOF, and what it sends afterwards still arrives."""
    before = b"first part from the client\n"
    after = det_bytes("after", 200000)
    greeting = b"upstream says goodbye to writing\n"

    def handler(bc):
        got = bc.recv(len(before))
        while len(got) < len(before):
            d = bc.recv(len(before) - len(got))
            assert d, "EOF too early"
            got += d
        bc.send(greeting)
        bc.send_close_notify()             # our write side is done; keep reading
        rest = bc.recv_until_eof()
        return got, rest

    up = ssl_upstream(handler, mode="bio")
    fwd = start_tlsfwd({"svc": service(up.port)})
    s = client(fwd)
    s.sendall(before)
    assert recv_all(s) == greeting       # data, then EOF at the client
    s.sendall(after)                       # the client->upstream direction still works
    s.shutdown(socket.SHUT_WR)
    got, rest = up.result()
    assert not up.errors, up.errors
    assert got == before
    assert len(rest) == len(after) and rest == after
    cl = fwd.wait_close(fwd.conn_of(s)["conn"])
    assert cl["reason"] == "done", cl
    assert (num(cl["bytes_up"]), num(cl["bytes_down"])) == \
        (len(before) + len(after), len(greeting)), cl
