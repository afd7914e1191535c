"""`tlsfwd -t` on a few hundred mutated copies of conf/tlsfwd.ini never
crashes, hangs or prints a malformed error.

Two bases, both checked first to pass `-t` (rc 0): the shipped example as it
is, and the same file with every commented-out example key switched on (its
file paths pointed at the test PKI, so that every key is really parsed). Each
case applies 1-3 seeded mutations: lines deleted, duplicated, swapped,
indented or truncated; bytes flipped or inserted (NUL, bytes that are not
UTF-8, CR, '[', ']', '=', ';', ...); very long lines; values set to edge
values (empty, huge, negative, overflowing, odd durations, bad CIDRs, bad
paths, format strings); sections and keys renamed. Every case must give:

- exit 0 with "FILE: configuration OK (N service(s))" and nothing on stderr,
  or exit 1 with nothing on stdout and only "FILE:LINE: message" lines on
  stderr (FILE:  message only for the whole-file "no service defined"), each
  LINE a line of the file; never a signal, another exit code, or a hang (10 s);
- no sanitizer report (the ASan+UBSan build);
- "line too long" only for lines that are longer than 198 characters, and
  rc 1 whenever the file has such a line; a "KEY: ..." message on a line
  that gives KEY (or continues a value), "unknown key 'K'" on a line naming K
  (or continuing K's value).

Failing cases are written to the test's tmp_path with the mutation list, so
that they can be replayed with `tlsfwd -t -c FILE`. Regression cases for
bugs found this way are at the end.
"""

import concurrent.futures
import os
import random
import re
import subprocess

import pytest

from harness.daemon import child_env, run_tlsfwd
from harness.wrapper import SANITIZER_MARKERS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED = os.path.join(REPO, "conf", "tlsfwd.ini")

SEED = 20261202
CASES = 400             # over both bases
TIMEOUT = 10.0          # per `tlsfwd -t`
LINE_MAX = 198          # README: "Lines are at most 198 characters"

GLOBAL_KEYS = ("log_level", "log_format", "shutdown_timeout", "workers", "user", "group",
               "max_connections", "io_collect_interval", "dns_servers")
SERVICE_KEYS = ("listen", "allow", "deny", "max_connections", "mode", "owner", "group",
                "upstream", "sni", "verify", "verify_hostname", "ca_file", "connect_timeout",
                "connect_race_delay", "resolve_interval",
                "handshake_timeout", "idle_timeout", "crl_file", "cert_file", "key_file",
                "allow_insecure_key_perms", "key_password_file", "pin_sha256", "alpn",
                "alpn_required", "tls_min_version", "tls_max_version", "tls_priority",
                "session_cache", "ocsp")
KEYS = sorted(set(GLOBAL_KEYS + SERVICE_KEYS))
# Example keys of conf/tlsfwd.ini left commented out in the "full" base: they
# apply to unix: listeners only, and the shipped owner/group do not exist.
UNIX_ONLY = ("mode", "owner", "group")


# -- the bases ---------------------------------------------------------------------------

def full_base(shipped, files):
    """The shipped file with each `;key = value` example line switched on,
    its file paths replaced by files[key]."""
    out = []
    for ln in shipped.split(b"\n"):
        m = re.match(rb"^;([a-z_0-9]+) = (.*)$", ln)
        if m and m.group(1).decode() in KEYS and m.group(1).decode() not in UNIX_ONLY:
            key = m.group(1).decode()
            ln = ("%s = %s" % (key, files.get(key, m.group(2).decode()))).encode()
        out.append(ln)
    return b"\n".join(out)


@pytest.fixture(scope="module")
def bases(pki):
    with open(SHIPPED, "rb") as f:
        shipped = f.read()
    files = {"ca_file": pki["ca"], "crl_file": pki["crl"], "cert_file": pki["client"],
             "key_file": pki["client_enc_key"], "key_password_file": pki["client_enc_pass"],
             "user": "root"}     # the example's tlsfwd user may not exist here
    full = full_base(shipped, files)
    assert full.count(b"\n;") < shipped.count(b"\n;"), "no example key was switched on"
    for key in ("crl_file", "key_password_file", "pin_sha256", "alpn", "tls_priority", "deny"):
        assert re.search(rb"\n%s = " % key.encode(), full), key
    return {"shipped": shipped, "full": full}


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory, pki):
    """Paths that exist but are the wrong thing for a path key."""
    d = tmp_path_factory.mktemp("odd")
    (d / "empty.pem").write_bytes(b"")
    (d / "garbage.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\n%%%%\n-----END CERTIFICATE-----\n")
    (d / "nul.pem").write_bytes(b"\x00" * 64)
    return [str(d), str(d / "empty.pem"), str(d / "garbage.pem"), str(d / "nul.pem"),
            pki["ca_key"], pki["server"], pki["client_key"], pki["crl"]]


# -- mutations ---------------------------------------------------------------------------

HUGE = ["0", "-1", "-0", "+5", "1e9", "0x10", "007", "4294967295", "4294967296", "2147483648",
        "9223372036854775807", "9223372036854775808", "18446744073709551615",
        "18446744073709551616", "9" * 40, "10000000", "10000001", "65", "64", "1 000"]
DURATIONS = ["0ms", "0s", "1ms", "0", "5", "5 s", "5S", "5sec", "1.5s", "-5s", "+5s", "1h1m",
             "ms", "s", "8760h", "8761h", "525600m", "31536000s", "31536000000ms",
             "31536000001ms", "18446744073709551615ms", "18446744073709551616h",
             "99999999999999999999h", "5s5s", "5ss", "\t5s"]
CIDRS = ["10.0.0.0/33", "10.0.0.1/8", "::/129", "::1/128", "1.2.3.4/-1", "/8", "0.0.0.0/0",
         "::/0", "fe80::1%lo/64", ",", ", ,", "10.0.0.0/8,", ",10.0.0.0/8", "256.0.0.0/8",
         "1.2.3/24", "10.0.0.0/08", "10.0.0.0/4294967328", "::ffff:127.0.0.1/128",
         "10.0.0.0/8 10.1.0.0/16", ", ".join("10.%d.0.0/16" % i for i in range(40)),
         "a" * 70, "1.2.3.4/" + "9" * 30]
ADDRESSES = ["127.0.0.1:0", "127.0.0.1:65535", "127.0.0.1:65536", "127.0.0.1:-1", ":80",
             "127.0.0.1:", "127.0.0.1", "[::1]", "[::1]:", "[::1]:0", "[", "]:1", "[]:1",
             "[1.2.3.4]:1", "[::1:1", "::1:80", "unix:", "unix:relative", "unix:/",
             "unix:/tmp/" + "a" * 120, "localhost:08080", "a" * 300 + ":1", "host..name:1",
             "-host:1", "host_name:1", "exa mple.com:443", "example.com:443:443",
             "0.0.0.0:1", "[::]:1", "1.2.3.4.5:1", "example.com:99999999999999999999",
             "%s:%n", "é.example:443"]
ENUMS = ["", "FULL", "full ", "yes", "no", "YES", "On", "2", "TLS1.1", "TLS1.0", "tls1.2",
         "TLS1.3 ", "auto", "AUTO", "json", "logfmt", "debug", "trace", "pin", "none",
         "require", "try", "off", "-", "--", "chain"]
PRIORITIES = ["NORMAL:%", "NONE", "SECURE256:+VERS-SSL3.0", "NORMAL:-VERS-ALL", "@SYSTEM",
              "NORMAL:+", "%COMPAT:%" * 20, "PERFORMANCE:-CIPHER-ALL", "NORMAL:!"]
PINS = ["sha256/", "sha256/" + "A" * 43 + "=", "====", "A" * 43, "A" * 44, "A" * 45,
        "sha256/sha256/" + "A" * 43 + "=", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU", "!" * 44]
ALPNS = [",", "h2,,x", "a" * 256, "a" * 255, "x," * 40, "h2,", " , ", "h2 ,http/1.1"]
STRINGS = ["", " ", "%s%s%s%n%x", "$(id)", "`id`", "'", '"', "\\", "\\x00", "a\\", "\xff\xfe",
           "\x01\x1b[31m", "é", "\u2028", "a" * 190, "root", "nobody", "65534", "-1",
           "a=b", "a;b", "a ; comment", "a;", "#x", "[x]", "=", ":"]
EDGE_BYTES = [b"\x00", b"\xff", b"\xc3", b"\x80", b"\xef\xbb\xbf", b"[", b"]", b"=", b";",
              b"#", b":", b"\n", b"\r", b"\t", b" ", b"\\", b'"', b",", b"/", b"%",
              b"\x7f", b"\x1b"]
SECTION_NAMES = ["global", "GLOBAL", "Global", "", " ", "a" * 64, "a" * 65, "ex ample",
                 "example]", "[example", "\xe9", "global2", "example", "x" * 190, "a/b",
                 "..", "-", "svc\x01"]


def value_pool(key, odd_files):
    if key.endswith("_timeout") or key in ("connect_race_delay", "resolve_interval"):
        return DURATIONS
    if key == "dns_servers":
        return ADDRESSES + CIDRS
    if key in ("allow", "deny"):
        return CIDRS
    if key in ("listen", "upstream", "sni", "verify_hostname"):
        return ADDRESSES
    if key.endswith("_file"):
        return odd_files + ["/nonexistent/x.pem", "/", "/dev/null", "/proc/self/mem", "",
                            "pkcs11:", "pkcs11:token=x;object=y", "relative.pem",
                            "/" + "d" * 190]
    if key in ("workers", "max_connections", "mode"):
        return HUGE + ["auto", "0777", "0660", "1777", "8", "07777"]
    if key == "tls_priority":
        return PRIORITIES
    if key == "pin_sha256":
        return PINS
    if key == "alpn":
        return ALPNS
    return ENUMS


def kv_lines(lines):
    """Indexes of `key = value` lines."""
    return [i for i, ln in enumerate(lines) if re.match(rb"^[a-z_]+ = ", ln)]


def pick_line(rng, lines):
    return rng.randrange(len(lines)) if lines else None


def m_delete(rng, lines, ctx):
    i = pick_line(rng, lines)
    if i is not None:
        del lines[i]
    return "delete line %s" % (None if i is None else i + 1)


def m_duplicate(rng, lines, ctx):
    i = pick_line(rng, lines)
    if i is not None:
        lines.insert(rng.randrange(len(lines) + 1), lines[i])
    return "duplicate line %s" % (None if i is None else i + 1)


def m_swap(rng, lines, ctx):
    if len(lines) < 2:
        return "swap: too few lines"
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return "swap lines %d and %d" % (i + 1, j + 1)


def m_indent(rng, lines, ctx):
    idx = kv_lines(lines)
    if not idx:
        return "indent: no key line"
    i = rng.choice(idx)
    lines[i] = rng.choice([b" ", b"\t", b"   "]) + lines[i]
    return "indent line %d" % (i + 1)


def m_set_value(rng, lines, ctx):
    idx = kv_lines(lines)
    if not idx:
        return "set value: no key line"
    i = rng.choice(idx)
    key = lines[i].split(b" = ", 1)[0].decode()
    pool = value_pool(key, ctx["odd_files"]) if rng.random() < 0.7 else rng.choice(
        [HUGE, DURATIONS, CIDRS, ADDRESSES, ENUMS, STRINGS, PINS])
    v = rng.choice(pool)
    lines[i] = key.encode() + b" = " + v.encode("utf-8", "surrogateescape")
    return "line %d: %s = %r" % (i + 1, key, v)


def m_rename_key(rng, lines, ctx):
    idx = kv_lines(lines)
    if not idx:
        return "rename key: no key line"
    i = rng.choice(idx)
    key, value = lines[i].split(b" = ", 1)
    new = rng.choice([rng.choice(KEYS), key.decode().upper(), key.decode() + "x",
                      key.decode()[:-1], "", " ", "a" * 150, "log-level", "listen.0",
                      key.decode() + " " + key.decode(), "\xff", "%s"])
    sep = rng.choice([b" = ", b"=", b" : ", b" =", b"= ", b" == "])
    lines[i] = new.encode("utf-8", "surrogateescape") + sep + value
    return "line %d: key %r -> %r with %r" % (i + 1, key, new, sep)


def m_rename_section(rng, lines, ctx):
    idx = [i for i, ln in enumerate(lines) if ln.startswith(b"[")]
    if not idx:
        return "rename section: none left"
    i = rng.choice(idx)
    name = rng.choice(SECTION_NAMES)
    form = rng.choice(["[%s]", "[%s]", "[%s] ; c", " [%s]", "[%s", "%s]", "[[%s]]",
                       "[%s]x", "[%s]]"])
    lines[i] = (form % name).encode("utf-8", "surrogateescape")
    return "line %d: section -> %r" % (i + 1, form % name)


def m_add_section(rng, lines, ctx):
    name = rng.choice(SECTION_NAMES + ["b", "c"])
    body = [b"[" + name.encode("utf-8", "surrogateescape") + b"]"]
    if rng.random() < 0.7:
        body.append(b"listen = " + rng.choice(ADDRESSES).encode())
    if rng.random() < 0.7:
        body.append(b"upstream = " + rng.choice(ADDRESSES).encode())
    at = rng.randrange(len(lines) + 1)
    lines[at:at] = body
    return "add section at line %d: %r" % (at + 1, body)


def m_long_line(rng, lines, ctx):
    n = rng.choice([LINE_MAX - 1, LINE_MAX, LINE_MAX + 1, LINE_MAX + 2, 255, 256, 4096, 70000])
    key = rng.choice(KEYS)
    kind = rng.choice(["value", "comment", "section", "bare", "continuation"])
    if kind == "value":
        head = key.encode() + b" = "
    elif kind == "comment":
        head = b"; "
    elif kind == "section":
        head = b"["
    elif kind == "continuation":
        head = b"  "
    else:
        head = b""
    filler = rng.choice([b"a", b"9", b"=", b"[", b" ", b"\xff", b";"])
    ln = (head + filler * n)[:n]
    if kind == "section":
        ln = ln[:-1] + b"]"
    at = rng.randrange(len(lines) + 1)
    lines.insert(at, ln)
    return "insert %s line of %d bytes (%r) at line %d" % (kind, len(ln), filler, at + 1)


def m_insert_bytes(rng, data):
    at = rng.randrange(len(data) + 1)
    b = rng.choice(EDGE_BYTES) * rng.choice([1, 1, 1, 2, 5])
    return data[:at] + b + data[at:], "insert %r at byte %d" % (b, at)


def m_flip(rng, data):
    if not data:
        return data, "flip: empty"
    at = rng.randrange(len(data))
    bit = 1 << rng.randrange(8)
    return data[:at] + bytes([data[at] ^ bit]) + data[at + 1:], "flip bit %#x of byte %d" % (
        bit, at)


def m_truncate(rng, data):
    at = rng.randrange(len(data) + 1)
    return data[:at], "truncate at byte %d" % at


def m_line_endings(rng, data):
    how = rng.choice(["crlf", "cr", "no final newline", "bom", "double bom"])
    if how == "crlf":
        data = data.replace(b"\n", b"\r\n")
    elif how == "cr":
        data = data.replace(b"\n", b"\r")
    elif how == "no final newline":
        data = data.rstrip(b"\n")
    elif how == "bom":
        data = b"\xef\xbb\xbf" + data
    else:
        data = b"\xef\xbb\xbf\xef\xbb\xbf" + data
    return data, "line endings: " + how


LINE_MUTATIONS = [m_delete, m_duplicate, m_swap, m_indent, m_set_value, m_set_value,
                  m_set_value, m_set_value, m_rename_key, m_rename_key, m_rename_section,
                  m_add_section, m_long_line]
BYTE_MUTATIONS = [m_insert_bytes, m_insert_bytes, m_flip, m_truncate, m_line_endings]


def mutate(base, rng, ctx):
    """1-3 mutations of base (bytes): returns (bytes, [descriptions])."""
    data, done = base, []
    for _ in range(rng.choice([1, 1, 2, 3])):
        if rng.random() < 0.7:
            lines = data.split(b"\n")
            done.append(rng.choice(LINE_MUTATIONS)(rng, lines, ctx))
            data = b"\n".join(lines)
        else:
            data, what = rng.choice(BYTE_MUTATIONS)(rng, data)
            done.append(what)
    return data, done


# -- running and judging `tlsfwd -t` ------------------------------------------------------

ERROR_RE = re.compile(rb"^(.*?):(\d+): (\S.*)$", re.S)
FILE_LEVEL = (b"no service defined",)


def run_check(binary, path):
    """(returncode, stdout, stderr) of `tlsfwd -t -c path`; returncode None on a hang."""
    try:
        r = subprocess.run([binary, "-t", "-c", path], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT,
                           env=child_env())
    except subprocess.TimeoutExpired as e:
        return None, e.stdout or b"", e.stderr or b""
    return r.returncode, r.stdout, r.stderr


def physical_lines(data):
    """The file's lines as tlsfwd counts them (split on LF; no final empty line)."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def judge(path, data, rc, out, err):
    """Problems with one `tlsfwd -t` run (empty list: fine)."""
    p = path.encode()
    if rc is None:
        return ["hung: no exit within %.0f s" % TIMEOUT]
    problems = []
    for m in SANITIZER_MARKERS:
        if m in err:
            problems.append("sanitizer report (%r)" % m.decode())
    if rc < 0:
        problems.append("killed by signal %d" % -rc)
    elif rc not in (0, 1):
        problems.append("exit code %d (want 0 or 1)" % rc)
    if problems:
        return problems
    lines = physical_lines(data)
    too_long = [i + 1 for i, ln in enumerate(lines) if len(ln) > LINE_MAX]    # a CR counts
    with_nul = [i + 1 for i, ln in enumerate(lines) if b"\x00" in ln]
    if rc == 0:
        # only warnings: what a service gives up of the defaults, on a line of it
        for ln in (err.split(b"\n")[:-1] if err.endswith(b"\n") else [err]) if err else []:
            m = ERROR_RE.match(ln)
            if (m is None or m.group(1) != p or not m.group(3).startswith(b"warning: [")
                    or not 1 <= int(m.group(2)) <= len(physical_lines(data))):
                problems.append("rc 0 but stderr: %r" % ln[:300])
        if not re.match(rb"^%s: configuration OK \(\d+ services?\)\n$" % re.escape(p), out):
            problems.append("rc 0 but stdout %r" % out[:300])
        if too_long:
            problems.append("rc 0 with lines longer than %d characters: %s" % (LINE_MAX,
                                                                             too_long[:5]))
        if with_nul:
            problems.append("rc 0 with NUL bytes on lines %s" % with_nul[:5])
        return problems
    if out:
        problems.append("rc 1 but stdout: %r" % out[:300])
    msgs = err.split(b"\n")
    if msgs[-1] != b"":
        problems.append("stderr does not end with a newline: %r" % err[-100:])
    msgs = msgs[:-1]
    if not msgs:
        problems.append("rc 1 without an error message")
    reported_long, reported_nul = set(), set()
    for ln in msgs:
        m = ERROR_RE.match(ln)
        if m is None or m.group(1) != p:
            if not (ln.startswith(p + b": ") and ln[len(p) + 2:].startswith(FILE_LEVEL)):
                problems.append("not FILE:LINE: message: %r" % ln[:300])
            continue
        n, msg = int(m.group(2)), m.group(3)
        if not 1 <= n <= max(len(lines), 1):
            problems.append("line %d outside the file (%d lines): %r" % (n, len(lines), ln[:300]))
            continue
        text = lines[n - 1]
        if msg.startswith(b"line too long"):
            reported_long.add(n)
            if len(text) <= LINE_MAX:
                problems.append("line %d reported too long but has %d characters: %r"
                                % (n, len(text), text[:80]))
        if msg.startswith(b"NUL byte"):
            reported_nul.add(n)
            if b"\x00" not in text:
                problems.append("line %d reported to hold a NUL but has none: %r" % (n, text[:80]))
        k = re.match(rb"^([a-z_]+): ", msg)
        if k and k.group(1).decode() in KEYS:
            if not (re.match(rb"^\s*(\xef\xbb\xbf)?%s\s*[=:]" % k.group(1), text)
                    or text[:1] in (b" ", b"\t")):
                problems.append("%r error on line %d, which does not give it: %r"
                                % (k.group(1), n, text[:80]))
        u = re.search(rb"unknown key '(.*)'$", msg)
        # an indented line continues the previous key's value, so names it
        if u and u.group(1) not in text and text[:1] not in (b" ", b"\t"):
            problems.append("unknown key %r on line %d, which does not name it: %r"
                            % (u.group(1), n, text[:80]))
    if with_nul:
        # a file with a NUL is not parsed at all: each such line is the error
        if reported_nul != set(with_nul):
            problems.append("NUL bytes on lines %s, reported on %s" % (with_nul,
                                                                      sorted(reported_nul)))
        return problems
    missing = [n for n in too_long if n not in reported_long]
    if missing:
        problems.append("lines longer than %d characters not reported: %s" % (LINE_MAX,
                                                                            missing[:5]))
    return problems


def write_case(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


# -- tests --------------------------------------------------------------------------------

@pytest.mark.parametrize("base", ["shipped", "full"])
def test_unmutated_base_passes(base, bases, tlsfwd_bin, tmp_path):
    path = write_case(tmp_path, base + ".ini", bases[base])
    rc, out, err = run_check(tlsfwd_bin, path)
    assert rc == 0, (rc, err.decode("utf-8", "replace"))
    assert judge(path, bases[base], rc, out, err) == []


def test_mutated_configs(bases, odd_files, tlsfwd_bin, tmp_path):
    rng = random.Random(SEED)
    ctx = {"odd_files": odd_files}
    cases = []
    for i in range(CASES):
        base = ("shipped", "full")[i % 2]
        data, what = mutate(bases[base], rng, ctx)
        cases.append(("case%03d-%s.ini" % (i, base), data, what))
    assert len({c[1] for c in cases}) > CASES * 0.9, "the mutations hardly differ"

    def one(case):
        name, data, what = case
        path = write_case(tmp_path, name, data)
        rc, out, err = run_check(tlsfwd_bin, path)
        return case, path, rc, judge(path, data, rc, out, err), err

    failures = []
    rcs = {0: 0, 1: 0}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for (name, data, what), path, rc, problems, err in pool.map(one, cases):
            if rc in rcs:
                rcs[rc] += 1
            if problems:
                failures.append("%s (%s):\n    %s\n    stderr: %r" % (
                    path, "; ".join(what), "\n    ".join(problems), err[:400]))
            else:
                os.unlink(path)
    assert not failures, "%d of %d mutated configs misbehaved:\n%s" % (
        len(failures), CASES, "\n".join(failures[:15]))
    # The mutations must reach both outcomes, and mostly errors.
    assert rcs[1] > CASES // 2 and rcs[0] > 0, rcs


# -- regression cases: bugs these mutations found ------------------------------------------

NUL_CONFIG = (b"[global]\n"                         # 1
              b"[svc]\n"                            # 2
              b"listen = 127.0.0.1:0\n"             # 3
              b"upstream = 127.0.0.1:1\n"           # 4
              b"; a comm\x00ent\n"                  # 5  NUL
              b"deny = 127.0.0.0/8\n"               # 6
              b"bogus = 1\n"                        # 7
              b"sni = a\x00\x00b\n")                # 8  NUL


@pytest.mark.parametrize("mode", ["check", "start"])
def test_nul_byte_is_an_error_at_its_line(mode, tlsfwd_bin, tmp_path):
    """A NUL byte in a line. `-t` used to report it as "line too long", skip
    the next line unread and number every later line one too low; a start
    read the file as a C string, so it silently ran without everything after
    the NUL (here: without the deny line, letting 127.0.0.1 in). Now both
    report each line with a NUL, at its number, and refuse the file."""
    path = write_case(tmp_path, "nul.ini", NUL_CONFIG)
    want = [b"%s:%d: NUL byte in the line: the file must be text" % (path.encode(), n)
            for n in (5, 8)]
    if mode == "check":
        rc, out, err = run_check(tlsfwd_bin, path)
        assert (rc, out, err.split(b"\n")[:-1]) == (1, b"", want), (rc, out, err)
        assert judge(path, NUL_CONFIG, rc, out, err) == []
    else:
        r = run_tlsfwd(tlsfwd_bin, ["-c", path], timeout=TIMEOUT)
        assert r.returncode == 1 and b"event=ready" not in r.stderr, r.stderr
        for w in want:
            assert w in r.stderr, r.stderr


@pytest.mark.parametrize("n, rc", [(LINE_MAX, 0), (LINE_MAX + 1, 1)])
def test_last_line_without_newline_is_length_checked(n, rc, tlsfwd_bin, tmp_path):
    """A last line without a newline that just filled inih's buffer (199
    characters) was accepted, although lines are at most 198 characters."""
    data = b"[global]\n[svc]\nlisten = 127.0.0.1:0\nupstream = 127.0.0.1:1\n;" + b"c" * (n - 1)
    path = write_case(tmp_path, "last.ini", data)
    got, out, err = run_check(tlsfwd_bin, path)
    assert got == rc, (got, err)
    assert judge(path, data, got, out, err) == []
    if rc:
        assert err == b"%s:5: line too long (at most 198 characters)\n" % path.encode()
