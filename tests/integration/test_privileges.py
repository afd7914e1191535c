"""Privileges: `[global] user`/`group` drop every uid/gid and the supplementary
groups before READY; running as root without `user` is warned about once; an
unknown user or group is a FILE:LINE configuration error."""

import os
import re
import shutil

import pytest

from harness.clients import echo_once
from harness.config import line_of, render_ini
from harness.daemon import run_tlsfwd
from harness.procfs import proc_status
from harness.upstreams import refusing_port, echo_handler

NOBODY = 65534


def ids(status, key):
    return status[key].split()


@pytest.fixture
def world_readable(short_dir, pki):
    """A 0755 directory holding a 0644 copy of the CA (readable after the drop)."""
    d = short_dir("tlsfwd-p")
    ca = os.path.join(d, "ca.pem")
    shutil.copyfile(pki["ca"], ca)
    os.chmod(ca, 0o644)
    return d, ca


@pytest.mark.parametrize("group", ["nogroup", None], ids=["group_nogroup", "group_omitted"])
def test_drop_to_nobody(group, world_readable, ssl_upstream, service, notify, start_tlsfwd):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    d, ca = world_readable
    up = ssl_upstream(echo_handler)
    n = notify()
    g = {"user": "nobody"}
    if group:
        g["group"] = group
    fwd = start_tlsfwd({"svc": service(up.port, ca_file=ca)}, g, ready=False, confdir=d,
                       env={"NOTIFY_SOCKET": n.path})
    n.wait_key("READY", "1", timeout=10)
    st = proc_status(fwd.pid)                # right at READY: already dropped
    assert ids(st, "Uid") == [str(NOBODY)] * 4, "Uid: %s" % st["Uid"]
    assert ids(st, "Gid") == [str(NOBODY)] * 4, "Gid: %s" % st["Gid"]
    assert st.get("Groups", "") == "", "supplementary groups kept: %r" % st.get("Groups")

    fwd.wait_ready(5)
    lines = fwd.find("privileges")
    assert len(lines) == 1, lines
    p = lines[0]
    assert p["level"] == "info", p
    assert (p.get("user"), str(p.get("uid")), p.get("group"), str(p.get("gid"))) == (
        "nobody", str(NOBODY), "nogroup", str(NOBODY)), p
    echo_once(fwd.ports["svc"])

    # Reload as nobody: the config and CA file are re-read without root.
    _m, rec = fwd.reload()
    assert rec.get("result") == "ok", rec
    echo_once(fwd.ports["svc"])
    assert ids(proc_status(fwd.pid), "Uid") == [str(NOBODY)] * 4


def test_root_without_user_is_warned_once(ssl_upstream, service, start_tlsfwd):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    up = ssl_upstream(echo_handler)
    fwd = start_tlsfwd({"a": service(up.port), "b": service(up.port)})
    lines = fwd.find("privileges")
    assert len(lines) == 1, lines
    assert lines[0]["level"] == "warn", lines[0]
    assert "root" in str(lines[0].get("msg", "")), lines[0]
    assert ids(proc_status(fwd.pid), "Uid")[0] == "0"
    echo_once(fwd.ports["a"])


UNKNOWN = {
    "user": ({"user": "tlsfwd-no-such-user"}, "user", "tlsfwd-no-such-user"),
    "group": ({"user": "nobody", "group": "tlsfwd-no-such-group"}, "group",
              "tlsfwd-no-such-group"),
}


@pytest.mark.parametrize("check", [True, False], ids=["check", "run"])
@pytest.mark.parametrize("case", sorted(UNKNOWN))
def test_unknown_user_or_group(case, check, tlsfwd_bin, service, tmp_path):
    g, key, name = UNKNOWN[case]
    text = render_ini(dict({"log_level": "info"}, **g), {"svc": service(refusing_port())})
    cfg = tmp_path / "priv.ini"
    cfg.write_text(text)
    r = run_tlsfwd(tlsfwd_bin, (["-t"] if check else []) + ["-c", str(cfg)], timeout=10)
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 1, "rc=%d; stderr:\n%s" % (r.returncode, err)
    want = "%s:%d: " % (cfg, line_of(text, "global", key))
    hits = [ln for ln in err.splitlines() if want in ln]
    assert hits, "want an error %r...; stderr:\n%s" % (want, err)
    assert any(re.search(r"\b%s\b" % key, ln) for ln in hits), hits
    assert any(name in ln for ln in hits), "the error should name %r: %r" % (name, hits)
    assert "event=ready" not in err
