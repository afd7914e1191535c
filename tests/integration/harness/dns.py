"""A DNS server the test controls: a small authoritative server (dnspython,
UDP on 127.0.0.1) that answers A and AAAA from a table the test changes
while it runs, with the TTLs it chooses, and counts the queries per name. It can also refuse (stopped:
the port closes, so queries get ICMP port unreachable) or drop queries
(silent), to stand for a DNS outage."""

import socket
import threading
import time

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


class DnsServer:
    def __init__(self):
        self.records = {}        # name -> {"A": [...], "AAAA": [...], "ttl": int}
        self.queries = {}        # name -> [monotonic time of each query]
        self.silent = False
        self._lock = threading.Lock()
        self._stop = False
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.address = "127.0.0.1:%d" % self.port
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def set(self, name, a=(), aaaa=(), ttl=60):
        """Answer name with these addresses (replacing what it had)."""
        with self._lock:
            self.records[name.rstrip(".").lower()] = {"A": list(a), "AAAA": list(aaaa),
                                                      "ttl": ttl}

    def remove(self, name):
        with self._lock:
            self.records.pop(name.rstrip(".").lower(), None)

    def count(self, name, since=0.0):
        """Queries for name (A and AAAA each count) at or after `since`."""
        with self._lock:
            return sum(1 for t in self.queries.get(name.rstrip(".").lower(), []) if t >= since)

    def _answer(self, query):
        resp = dns.message.make_response(query)
        resp.flags |= dns.flags.AA
        q = query.question[0]
        name = q.name.to_text().rstrip(".").lower()
        with self._lock:
            self.queries.setdefault(name, []).append(time.monotonic())
            rec = self.records.get(name)
        if rec is None:
            resp.set_rcode(dns.rcode.NXDOMAIN)
            return resp
        kind = dns.rdatatype.to_text(q.rdtype)
        addrs = rec.get(kind, [])
        if addrs:
            resp.answer.append(dns.rrset.from_text_list(q.name, rec["ttl"], "IN", kind, addrs))
        return resp

    def _serve(self):
        while not self._stop:
            try:
                data, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            if self.silent:
                continue
            try:
                query = dns.message.from_wire(data)
            except Exception:  # noqa: BLE001 - not DNS: ignore it
                continue
            try:
                self.sock.sendto(self._answer(query).to_wire(), peer)
            except OSError:
                pass

    def close(self):
        self._stop = True
        self._thread.join(2)
        self.sock.close()
