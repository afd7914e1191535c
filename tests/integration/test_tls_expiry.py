"""Client certificate expiry awareness: a cert_file that expires within 14 days
is warned about at start-up (event=cert_expiry with subject, not_after, days_left)."""

import datetime

from harness.clients import www_fetch
from harness.tlsinfo import cert_not_after


def parse_rfc3339(text):
    t = text.replace("Z", "+00:00")
    dt = datetime.datetime.fromisoformat(t)
    assert dt.tzinfo is not None, "not_after without a time zone: %r" % text
    return dt


def test_expiring_client_cert_warned_at_startup(pki, service, start_tlsfwd):
    fwd = start_tlsfwd({
        "soon": service("localhost:443", cert_file=pki["client_soon"],
                        key_file=pki["client_soon_key"]),
        "year": service("localhost:443", cert_file=pki["client"], key_file=pki["client_key"]),
        "none": service("localhost:443"),
    })
    w = fwd.wait_event("cert_expiry", service="soon")
    assert w["level"] == "warn", w
    assert "CN=tlsfwd expiring client" in w["subject"], w
    not_after = parse_rfc3339(w["not_after"])
    want = cert_not_after(pki["client_soon"])
    assert abs((not_after - want).total_seconds()) <= 1, (w, want)
    days = int(w["days_left"])
    assert days in (4, 5), w        # issued for 5 days just now
    # a start-up line: logged before readiness
    assert fwd.records.index(w) < fwd.records.index(fwd.find("ready")[0]), fwd.log_text()
    assert len(fwd.find("cert_expiry", service="soon")) == 1, fwd.log_text()
    # a certificate valid for years, or none at all: no warning
    assert not fwd.find("cert_expiry", service="year"), fwd.log_text()
    assert not fwd.find("cert_expiry", service="none"), fwd.log_text()


def test_expiring_client_cert_still_used(openssl_server, pki, service, start_tlsfwd, client):
    """The warning does not stop the certificate from being sent."""
    srv = openssl_server("server", "-www", "-Verify", "1", "-CAfile", pki["ca"])
    fwd = start_tlsfwd({"svc": service("localhost:%d" % srv.port, cert_file=pki["client_soon"],
                                       key_file=pki["client_soon_key"])})
    fwd.wait_event("cert_expiry", service="svc")
    s = client(fwd)
    page = www_fetch(s)
    assert page.startswith(b"HTTP/1.0 200 ok") and b"tlsfwd expiring client" in page, page[:200]
    hs = fwd.conn_of(s)
    assert hs["result"] == "ok" and "CN=tlsfwd expiring client" in hs["client_cert"], hs


def test_expiring_client_cert_passes_check(pki, service, check_ini):
    rc, errors, _text, _path = check_ini({"svc": service(
        "localhost:443", cert_file=pki["client_soon"], key_file=pki["client_soon_key"])})
    assert rc == 0, errors
    assert not [e for e in errors if e[0] is not None], errors
