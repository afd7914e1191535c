"""The metrics endpoint ([global] metrics_listen) as tests read it: a GET of
any path, and one sample's value from /metrics."""

import http.client
import re


def metrics_port(fwd):
    return int(fwd.find("metrics")[0]["listen"].rsplit(":", 1)[1])


def http_get(fwd, path="/metrics"):
    """(status, Content-Type, body bytes) of GET path."""
    c = http.client.HTTPConnection("127.0.0.1", metrics_port(fwd), timeout=10)
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, r.getheader("Content-Type"), body


def sample(fwd, name, **labels):
    """The value of one sample of /metrics (None if absent)."""
    want = ",".join('%s="%s"' % kv for kv in labels.items())
    pat = re.compile(r"^%s(\{%s\})? (\S+)$" % (re.escape(name), re.escape(want)), re.M)
    m = pat.search(http_get(fwd)[2].decode())
    return float(m.group(2)) if m else None
