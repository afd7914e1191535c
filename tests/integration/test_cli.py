"""Command line: -t config validation (FILE:LINE: message), -V, -h, bad flags,
and start-up failures."""

import os
import re
import socket

import pytest

from harness.daemon import run_tlsfwd

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

GOOD = """\
; a good configuration
[global]
log_level = debug
log_format = json
shutdown_timeout = 1500ms

[web]
listen = 127.0.0.1:0
upstream = localhost:8443
sni = localhost
verify = full
verify_hostname = localhost
ca_file = {ca}   ; trailing comment
connect_timeout = 5s
handshake_timeout = 2m
idle_timeout = 1h

# another comment style
[Other_svc.2-x]
listen = [::1]:0
upstream = [::1]:443
verify = chain
ca_file = {ca}

[abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.]
listen = 127.0.0.1:0
upstream = localhost:1

[sock]
listen = unix:{tmp}/t.sock
upstream = 127.0.0.1:443
sni = -
verify = none
"""

SERVICE = "[svc]\nlisten = 127.0.0.1:0\nupstream = localhost:443\nca_file = {ca}\n"

# id -> (config text, expected error line numbers, words one of which must be in the message)
# Line numbers are counted in the text (1-based); keep them in sync when editing.
BAD = {
    "unknown_key": ("[global]\n" + SERVICE + "bogus_key = 1\n", {6}, ("bogus_key",)),
    "unknown_global_key": ("[global]\nfrobnicate = yes\n" + SERVICE, {2}, ("frobnicate",)),
    "duplicate_service": ("[global]\n" + SERVICE + "\n" + SERVICE.replace("127.0.0.1:0", "127.0.0.1:1"),
                          {7}, ("svc",)),
    "bad_duration": ("[global]\n" + SERVICE + "connect_timeout = 5x\n", {6}, ("5x", "duration")),
    "zero_timeout": ("[global]\n" + SERVICE + "idle_timeout = 0\n", {6}, ("idle_timeout", "0")),
    "bad_shutdown_timeout": ("[global]\nshutdown_timeout = soon\n" + SERVICE, {2}, ("soon", "duration")),
    "port_out_of_range": ("[global]\n" + SERVICE.replace("127.0.0.1:0", "127.0.0.1:99999"), {3},
                          ("99999", "port")),
    "listen_without_port": ("[global]\n" + SERVICE.replace("127.0.0.1:0", "nohostport"), {3},
                            ("nohostport", "address", "port")),
    "upstream_without_port": ("[global]\n" + SERVICE.replace("localhost:443", "localhost"), {4},
                              ("localhost", "address", "port")),
    "missing_upstream": ("[global]\n" + SERVICE.replace("upstream = localhost:443\n", ""), {2},
                         ("upstream",)),
    "missing_listen": ("[global]\n" + SERVICE.replace("listen = 127.0.0.1:0\n", ""), {2},
                       ("listen",)),
    "bad_verify": ("[global]\n" + SERVICE + "verify = maybe\n", {6}, ("maybe", "verify")),
    "bad_log_format": ("[global]\nlog_format = xml\n" + SERVICE, {2}, ("xml", "log_format")),
    "bad_log_level": ("[global]\nlog_level = loud\n" + SERVICE, {2}, ("loud", "log_level")),
    "missing_ca_file": ("[global]\n" + SERVICE.replace("{ca}", "/nonexistent/dir/ca.pem"), {5},
                        ("/nonexistent/dir/ca.pem",)),
    "ca_file_not_pem": ("[global]\n" + SERVICE.replace("{ca}", "{garbage}"), {5}, ("garbage.pem",)),
    "ca_file_is_directory": ("[global]\n" + SERVICE.replace("{ca}", "/tmp"), {5}, ("/tmp",)),
    "key_twice": ("[global]\n" + SERVICE + "listen = 127.0.0.1:1\n", {6}, ("listen", "twice")),
    "upstream_twice": ("[global]\n" + SERVICE + "upstream = localhost:443\n", {6},
                       ("localhost:443", "twice")),
    "syntax_no_equals": ("[global]\n" + SERVICE + "this line has no equals sign\n", {6}, ()),
    "syntax_unterminated_section": ("[global]\n[svc\n" + SERVICE, {2}, ()),
    "bad_section_name": ("[global]\n" + SERVICE.replace("[svc]", "[bad name!]") + SERVICE, {2},
                         ("bad name!", "name")),
    "section_name_too_long": ("[global]\n" + SERVICE.replace("svc", "s" * 65) + SERVICE, {2},
                              ("s" * 65, "64", "name")),
    "no_space_before_comment": ("[global]\n" + SERVICE + "verify = full;x\n", {6}, ("full;x",)),
    "hash_after_value": ("[global]\n" + SERVICE + "verify = full # x\n", {6}, ("verify",)),
    "duration_without_unit": ("[global]\n" + SERVICE + "idle_timeout = 5\n", {6}, ("5",)),
    "duration_fraction": ("[global]\n" + SERVICE + "idle_timeout = 1.5s\n", {6}, ("1.5s",)),
    "duration_negative": ("[global]\n" + SERVICE + "idle_timeout = -5s\n", {6}, ("-5s",)),
    "sni_ip_literal": ("[global]\n" + SERVICE + "sni = 127.0.0.1\n", {6}, ("sni",)),
    "line_of_199_chars": ("[global]\n" + SERVICE + ";" + "c" * 198 + "\n", {6}, ("long", "198")),
    "long_line": ("[global]\n" + SERVICE + "sni = " + "a" * 250 + "\n", {6}, ("long", "198")),
}


def check_errors(r, path, want_lines):
    """rc 1, and stderr is only `PATH:LINE: message` lines; return [(line, msg)]."""
    assert r.returncode == 1, (r.returncode, r.stderr)
    text = r.stderr.decode("utf-8", "replace")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert lines, "no error message"
    errs = []
    for ln in lines:
        m = re.match(r"^(.*):(\d+): (\S.*)$", ln)
        assert m, "not FILE:LINE: message: %r" % ln
        assert m.group(1) == path, "file name %r, want %r" % (m.group(1), path)
        errs.append((int(m.group(2)), m.group(3)))
    assert {n for n, _ in errs} == set(want_lines), "error lines %s, want %s:\n%s" % (
        sorted({n for n, _ in errs}), sorted(want_lines), text)
    return errs


def test_check_good_config(tlsfwd_bin, pki, tmp_path):
    cfg = tmp_path / "good.ini"
    cfg.write_text(GOOD.format(ca=pki["ca"], tmp=tmp_path))
    r = run_tlsfwd(tlsfwd_bin, ["-t", "-c", str(cfg)])
    assert r.returncode == 0, r.stderr.decode()
    # no errors; what a service gives up of the defaults is said, as a warning
    lines = r.stderr.decode().splitlines()
    assert [ln for ln in lines if "good.ini:" in ln and ": warning: " not in ln] == [], lines
    assert any(": warning: [sock]: verify = none" in ln for ln in lines), lines
    assert not (tmp_path / "t.sock").exists(), "-t must not bind listeners"


def test_check_accepts_line_of_198_chars(tlsfwd_bin, pki, tmp_path):
    """README: "Lines are at most 198 characters"."""
    long_comment = ";" + "c" * 197
    cfg = tmp_path / "l198.ini"
    cfg.write_text("[global]\n" + long_comment + "\n" + SERVICE.replace("{ca}", pki["ca"]))
    assert len(long_comment) == 198
    r = run_tlsfwd(tlsfwd_bin, ["-t", "-c", str(cfg)])
    assert r.returncode == 0, r.stderr.decode()


def test_check_shipped_example_config(tlsfwd_bin):
    r = run_tlsfwd(tlsfwd_bin, ["-t", "-c", os.path.join(REPO, "conf", "tlsfwd.ini")])
    assert r.returncode == 0, r.stderr.decode()


@pytest.mark.parametrize("case", sorted(BAD))
def test_check_rejects(case, tlsfwd_bin, pki, tmp_path):
    text, want_lines, words = BAD[case]
    cfg = tmp_path / ("%s.ini" % case)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("this is not a certificate\n")
    cfg.write_text(text.replace("{ca}", pki["ca"]).replace("{garbage}", str(garbage)))
    r = run_tlsfwd(tlsfwd_bin, ["-t", "-c", str(cfg)])
    errs = check_errors(r, str(cfg), want_lines)
    if words:
        msgs = " ".join(m for _, m in errs).lower()
        assert any(w.lower() in msgs for w in words), "message should mention one of %r: %r" % (
            words, errs)


def test_check_reports_every_error(tlsfwd_bin, pki, tmp_path):
    text = "\n".join([
        "[global]",                          # 1
        "log_level = chatty",                # 2  bad enumeration
        "colour = blue",                     # 3  unknown global key
        "",                                  # 4
        "[one]",                             # 5
        "listen = 127.0.0.1:0",              # 6
        "upstream = localhost:443",          # 7
        "ca_file = %s" % pki["ca"],          # 8
        "connect_timeout = 5x",              # 9  bad duration
        "verify = maybe",                    # 10 bad enumeration
        "colour = red",                      # 11 unknown key
        "",                                  # 12
        "[two]",                             # 13
        "listen = 127.0.0.1:1",              # 14
        "upstream = localhost:443",          # 15
        "ca_file = /nonexistent/ca.pem",     # 16 missing CA file
        "idle_timeout = 10s",                # 17
        "idle_timeout = 20s",                # 18 key twice
        "",                                  # 19
        "[one]",                             # 20 duplicate service
        "listen = 127.0.0.1:2",              # 21
        "upstream = localhost:443",          # 22
        "ca_file = %s" % pki["ca"],          # 23
    ]) + "\n"
    want = [2, 3, 9, 10, 11, 16, 18, 20]
    cfg = tmp_path / "many.ini"
    cfg.write_text(text)
    r = run_tlsfwd(tlsfwd_bin, ["-t", "-c", str(cfg)])
    errs = check_errors(r, str(cfg), want)
    assert len(errs) == len(want), "want exactly %d error lines, got:\n%s" % (
        len(want), r.stderr.decode())


def test_check_config_without_service(tlsfwd_bin, tmp_path):
    cfg = tmp_path / "empty.ini"
    cfg.write_text("[global]\nlog_level = info\n")
    r = run_tlsfwd(tlsfwd_bin, ["-t", "-c", str(cfg)])
    assert r.returncode == 1
    assert r.stderr.startswith(str(cfg).encode() + b":"), r.stderr


def test_bad_config_refuses_to_start(tlsfwd_bin, pki, tmp_path):
    cfg = tmp_path / "bad.ini"
    cfg.write_text("[global]\n" + SERVICE.replace("{ca}", pki["ca"]) + "verify = maybe\n")
    r = run_tlsfwd(tlsfwd_bin, ["-c", str(cfg)])
    assert r.returncode != 0
    assert ("%s:6:" % cfg).encode() in r.stderr, r.stderr.decode()
    assert b"event=ready" not in r.stderr


@pytest.mark.parametrize("check", [True, False], ids=["check", "run"])
def test_missing_config_file(check, tlsfwd_bin, tmp_path):
    path = str(tmp_path / "does-not-exist.ini")
    r = run_tlsfwd(tlsfwd_bin, (["-t"] if check else []) + ["-c", path])
    assert r.returncode == 1, r
    assert path.encode() in r.stderr, r.stderr.decode()


def test_listen_address_in_use_fails_start(tlsfwd_bin, pki, tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        port = busy.getsockname()[1]
        cfg = tmp_path / "busy.ini"
        cfg.write_text("[global]\n" + SERVICE.replace("{ca}", pki["ca"]).replace(
            "127.0.0.1:0", "127.0.0.1:%d" % port))
        r = run_tlsfwd(tlsfwd_bin, ["-c", str(cfg)])
        assert r.returncode != 0
        assert b"event=ready" not in r.stderr
        assert b"EADDRINUSE" in r.stderr or b"in use" in r.stderr.lower(), r.stderr.decode()
    finally:
        busy.close()


def test_version(tlsfwd_bin):
    r = run_tlsfwd(tlsfwd_bin, ["-V"])
    assert r.returncode == 0
    assert re.search(rb"\d+\.\d+", r.stdout + r.stderr), (r.stdout, r.stderr)


def test_help(tlsfwd_bin):
    r = run_tlsfwd(tlsfwd_bin, ["-h"])
    assert r.returncode == 0
    out = r.stdout + r.stderr
    assert b"-c" in out and b"-t" in out and b"-V" in out, out


@pytest.mark.parametrize("args", [["-Z"], ["--bogus"], ["-t", "-c"]], ids=["-Z", "--bogus", "-c-no-arg"])
def test_bad_flags(args, tlsfwd_bin):
    r = run_tlsfwd(tlsfwd_bin, args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert b"-c" in r.stderr and b"-t" in r.stderr, "usage expected on stderr: %r" % r.stderr
    assert r.stdout == b""
