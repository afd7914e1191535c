"""Upstream names resolved on the event loop (c-ares), against a DNS server
the test starts and controls (dns_server.py; [global] dns_servers): a name
missing at start-up recovers within about a second once it resolves (no
reload), an address change is followed within the TTL, a DNS outage keeps
the last good addresses (said once), TTLs and resolve_interval decide how
often the name is asked for, and /etc/hosts names resolve."""

import os
import socket
import time

import pytest

from harness.clients import connect, exchange_ok, recv_closed
from harness.dns import DnsServer
from harness.namespaces import with_hosts
from harness.upstreams import echo_handler, server_context, Upstream


@pytest.fixture
def dns(cleanup):
    d = DnsServer()
    cleanup.append(d)
    return d


def _upstream_on(pki, cleanup, ip, port=0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, port))
    s.listen(64)
    s.settimeout(0.2)
    up = Upstream(echo_handler, ctx=server_context(pki["server"], pki["server_key"]),
                    sock=s)
    cleanup.append(up)
    return up


def _start(start_tlsfwd, service, dns, port, name="db.test", argv=None, **over):
    opts = dict(verify_hostname="localhost")
    opts.update(over)
    return start_tlsfwd({"svc": service("%s:%d" % (name, port), **opts)},
                        {"dns_servers": dns.address}, argv=argv)


def test_name_missing_at_start_recovers_without_reload(pki, cleanup, service, start_tlsfwd, dns):
    up = _upstream_on(pki, cleanup, "127.0.0.1")
    fwd = _start(start_tlsfwd, service, dns, up.port)
    warn = fwd.wait_event("resolve", service="svc")
    assert warn["level"] == "warn" and "db.test" in warn["error"], warn
    s = connect(fwd.ports["svc"])
    try:
        data, _ = recv_closed(s)
        hs = fwd.conn_of(s)
    finally:
        s.close()
    assert (hs["result"], hs["stage"], hs["upstream"]) == ("fail", "resolve", "-"), hs
    dns.set("db.test", a=["127.0.0.1"], ttl=60)
    added = time.monotonic()
    while True:
        try:
            hs, _ = exchange_ok(fwd)
            break
        except (AssertionError, OSError):     # still failing: stage=resolve
            assert time.monotonic() - added < 5, fwd.log_text(20)
            time.sleep(0.05)
    recovery = time.monotonic() - added
    print("recovered %.2f s after the name was added" % recovery)
    assert recovery < 2.0, recovery
    ok = fwd.wait_event("resolve", service="svc", level="info")
    assert (ok["addresses"], ok["previous"]) == ("127.0.0.1:%d" % up.port, "-"), ok
    # failing lookups in between were not logged again
    assert len([r for r in fwd.find("resolve") if r["level"] == "warn"]) == 1, fwd.find("resolve")


def test_address_change_is_followed_within_the_ttl(pki, cleanup, service, start_tlsfwd, dns):
    one = _upstream_on(pki, cleanup, "127.0.0.1")
    two = _upstream_on(pki, cleanup, "127.0.0.2", one.port)
    dns.set("db.test", a=["127.0.0.1"], ttl=1)
    fwd = _start(start_tlsfwd, service, dns, one.port)
    hs, _ = exchange_ok(fwd)
    assert hs["upstream"] == "127.0.0.1:%d" % one.port, hs
    dns.set("db.test", a=["127.0.0.2"], ttl=1)
    moved = time.monotonic()
    while True:
        hs, _ = exchange_ok(fwd)
        if hs["upstream"] == "127.0.0.2:%d" % one.port:
            break
        assert time.monotonic() - moved < 5, fwd.log_text(20)
        time.sleep(0.05)
    followed = time.monotonic() - moved
    print("followed the move %.2f s after it (TTL 1 s)" % followed)
    assert followed < 2.5, followed
    line = fwd.wait_event("resolve", service="svc", addresses="127.0.0.2:%d" % one.port)
    assert line["previous"] == "127.0.0.1:%d" % one.port, line
    assert two.accepted >= 1


def test_dns_outage_keeps_the_last_addresses(pki, cleanup, service, start_tlsfwd, dns):
    up = _upstream_on(pki, cleanup, "127.0.0.1")
    dns.set("db.test", a=["127.0.0.1"], ttl=1)
    fwd = _start(start_tlsfwd, service, dns, up.port)
    exchange_ok(fwd)
    dns.silent = True
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < 4:
        exchange_ok(fwd)
        n += 1
        time.sleep(0.1)
    stale = fwd.wait_event("resolve", service="svc", stale="yes")
    assert stale["level"] == "warn" and stale["addresses"] == "127.0.0.1:%d" % up.port, stale
    assert len(fwd.find("resolve", stale="yes")) == 1
    assert not [r for r in fwd.find("handshake") if r["result"] != "ok"]
    dns.silent = False


def test_ttl_decides_how_often_the_name_is_asked(pki, cleanup, service, start_tlsfwd, dns):
    up = _upstream_on(pki, cleanup, "127.0.0.1")
    dns.set("db.test", a=["127.0.0.1"], ttl=2)
    fwd = _start(start_tlsfwd, service, dns, up.port)
    exchange_ok(fwd)
    t0 = time.monotonic()
    since = t0
    while time.monotonic() - t0 < 5:
        exchange_ok(fwd)          # connections do not cause lookups
        time.sleep(0.05)
    lookups = dns.count("db.test", since) / 2.0    # A and AAAA each
    # one lookup per 2 s TTL: 2 or 3 in 5 s, never one per connection
    assert 2 <= lookups <= 3.5, lookups


def test_resolve_interval_bounds_a_long_ttl(pki, cleanup, service, start_tlsfwd, dns):
    up = _upstream_on(pki, cleanup, "127.0.0.1")
    dns.set("db.test", a=["127.0.0.1"], ttl=3600)
    fwd = _start(start_tlsfwd, service, dns, up.port, resolve_interval="1s")
    exchange_ok(fwd)
    since = time.monotonic()
    time.sleep(3.2)
    lookups = dns.count("db.test", since) / 2.0
    assert 2 <= lookups <= 4, lookups


def test_hosts_file_names_resolve(pki, cleanup, service, start_tlsfwd, dns, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a private /etc/hosts")
    up = _upstream_on(pki, cleanup, "127.0.0.1")
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 hosts-only.test\n")
    fwd = _start(start_tlsfwd, service, dns, up.port, name="hosts-only.test",
                 argv=with_hosts(str(hosts)))
    hs, _ = exchange_ok(fwd)
    assert hs["upstream"] == "127.0.0.1:%d" % up.port, hs
    assert dns.count("hosts-only.test") == 0
