"""The systemd units, the sysusers.d file, the man pages and `make install`.

Hermetic: nothing here needs a running systemd or touches the host's /etc or
/usr. Units are checked with `systemd-analyze verify` in a temporary directory
(their /usr/bin/tlsfwd rewritten to the binary under test) and again inside a
`make install DESTDIR=` tree with `--root=`, and scored with
`systemd-analyze security --offline=yes`. A missing tool is a failure naming
the Debian package (`make deps` installs them all), never a skip.
"""

import configparser
import os
import re
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SYSTEMD_DIR = os.path.join(REPO, "systemd")

SERVICES = ["tlsfwd.service", "tlsfwd@.service"]
SOCKETS = ["tlsfwd.socket", "tlsfwd@.socket"]
UNITS = SERVICES + SOCKETS
MAN_PAGES = {  # source in the repository -> installed path under PREFIX
    "daemon/tlsfwd.8": "share/man/man8/tlsfwd.8",
    "conf/tlsfwd.ini.5": "share/man/man5/tlsfwd.ini.5",
}
MAX_EXPOSURE = 2.0

# Every tool used here, with the Debian package that provides it. The same
# packages must be in the Makefile's DEB_PKGS so that `make deps` installs them.
TOOLS = {
    "systemd-analyze": "systemd",
    "systemd-sysusers": "systemd",
    "groff": "groff-base",
    "mandoc": "mandoc",
    "man": "man-db",
    "make": "make",
    "strace": "strace",
}

TIMEOUT = 120


def tool(name):
    path = shutil.which(name)
    if path is None:
        pytest.fail("%s not found: install the Debian package %s "
                    "(`make deps` does)" % (name, TOOLS[name]))
    return path


def clean_env(**extra):
    """The environment for a tool: no colours, no pager, no outer make."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    env.update(SYSTEMD_COLORS="0", SYSTEMD_PAGER="cat", PAGER="cat",
               MANPAGER="cat", LC_ALL="C.UTF-8")
    env.update(extra)
    return env


def run(argv, env=None, cwd=None):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=env or clean_env(), cwd=cwd, timeout=TIMEOUT,
                          check=False)


def text(b):
    return b.decode("utf-8", "replace")


def unit_directives(path):
    """[(section, key, value)] of a unit file, comments and blank lines out."""
    out, section = [], None
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            key, _, value = line.partition("=")
            out.append((section, key.strip(), value.strip()))
    return out


def directive(path, section, key):
    """Every value of section/key, in order."""
    return [v for s, k, v in unit_directives(path) if s == section and k == key]


def exec_path(value):
    """The program of an Exec*= value (without the -@:+! prefixes)."""
    return value.split()[0].lstrip("-@:+!")


def render_units(dest, binary):
    """Copies the units to dest with /usr/bin/tlsfwd replaced by binary."""
    os.makedirs(dest, exist_ok=True)
    for u in UNITS:
        with open(os.path.join(SYSTEMD_DIR, u), encoding="utf-8") as f:
            s = f.read()
        with open(os.path.join(dest, u), "w", encoding="utf-8") as f:
            f.write(s.replace("/usr/bin/tlsfwd", binary))
    return dest


def man_tree(dest):
    """A MANPATH directory holding the man pages, for Documentation=."""
    for src, inst in MAN_PAGES.items():
        path = os.path.join(dest, inst[len("share/man/"):])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shutil.copy(os.path.join(REPO, src), path)
    return dest


def make_install(tlsfwd_bin, destdir, *args):
    """`make install` of the binary under test, without rebuilding it.

    BUILD is the binary's directory and `-o` marks the binary up to date, so
    the plain and the ASan test runs each install exactly what they test.
    """
    build = os.path.dirname(tlsfwd_bin)
    r = run([tool("make"), "-C", REPO, "--no-print-directory",
             "-o", os.path.join(build, "tlsfwd"), "BUILD=" + build,
             "install", "DESTDIR=" + destdir] + list(args))
    assert r.returncode == 0, "make install failed:\n%s%s" % (
        text(r.stdout), text(r.stderr))
    return r


def tree(root):
    out = set()
    for d, _, files in os.walk(root):
        for f in files:
            out.add(os.path.relpath(os.path.join(d, f), root))
    return out


# ---------------------------------------------------------------------------
# Tools and packages
# ---------------------------------------------------------------------------

def test_makefile_deps_name_every_tool_package():
    with open(os.path.join(REPO, "Makefile"), encoding="utf-8") as f:
        mk = f.read()
    m = re.search(r"^DEB_PKGS\s*:?=((?:.*\\\n)*.*)$", mk, re.M)
    assert m, "DEB_PKGS not found in the Makefile"
    pkgs = set(m.group(1).replace("\\\n", " ").split())
    missing = sorted(set(TOOLS.values()) - pkgs)
    assert not missing, "add to DEB_PKGS in the Makefile: %s" % missing


# ---------------------------------------------------------------------------
# Units
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("unit", SERVICES)
def test_security_exposure(unit):
    r = run([tool("systemd-analyze"), "security", "--offline=yes",
             "--no-pager", os.path.join(SYSTEMD_DIR, unit)])
    out = text(r.stdout) + text(r.stderr)
    m = re.search(r"Overall exposure level for (\S+): (\d+(?:\.\d+)?)", out)
    assert m, "no 'Overall exposure level' line (rc %d):\n%s" % (
        r.returncode, out)
    assert r.returncode == 0, out
    level = float(m.group(2))
    assert level <= MAX_EXPOSURE, (
        "%s: exposure %.1f > %.1f:\n%s" % (unit, level, MAX_EXPOSURE, out))


@pytest.mark.parametrize("unit", UNITS)
def test_verify(unit, tlsfwd_bin, tmp_path):
    """verify passes, with warnings as errors, the unit's own programs and
    man pages (Documentation=) included, the host's /bin/kill and targets."""
    units = render_units(str(tmp_path / "units"), tlsfwd_bin)
    man = man_tree(str(tmp_path / "man"))
    r = run([tool("systemd-analyze"), "verify", "--recursive-errors=yes",
             os.path.join(units, unit)], env=clean_env(MANPATH=man))
    out = text(r.stdout) + text(r.stderr)
    assert r.returncode == 0 and out == "", (
        "systemd-analyze verify %s (rc %d):\n%s" % (unit, r.returncode, out))


def test_verify_catches_errors(tlsfwd_bin, tmp_path):
    """The check above can fail: a misspelt directive and a missing man page."""
    units = render_units(str(tmp_path / "units"), tlsfwd_bin)
    with open(os.path.join(units, "tlsfwd.service"), "a",
              encoding="utf-8") as f:
        f.write("\n[Service]\nProtectSystm=strict\n")
    r = run([tool("systemd-analyze"), "verify", "--recursive-errors=yes",
             os.path.join(units, "tlsfwd.service")],
            env=clean_env(MANPATH=str(tmp_path / "no-man")))
    out = text(r.stdout) + text(r.stderr)
    assert r.returncode != 0
    assert "ProtectSystm" in out and "man tlsfwd(8)" in out, out


def test_service_settings():
    for unit in SERVICES:
        path = os.path.join(SYSTEMD_DIR, unit)
        d = {(s, k): v for s, k, v in unit_directives(path)}
        want = {
            "Type": "notify", "NotifyAccess": "main",
            "Restart": "on-failure",
            "User": "tlsfwd", "Group": "tlsfwd", "UMask": "0077",
            "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
            "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
            "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        }
        for k, v in want.items():
            assert d.get(("Service", k)) == v, "%s: %s=%r, want %r" % (
                unit, k, d.get(("Service", k)), v)
        assert re.fullmatch(r"\d+s", d[("Service", "WatchdogSec")])
        assert int(d[("Service", "LimitNOFILE")]) >= 2 * 50000 + 64   # 50000 idle connections
        # A user namespace would make CAP_NET_BIND_SERVICE useless for the
        # host's network namespace (ports < 1024 fail with EACCES), and tlsfwd
        # must reach its upstreams.
        for k in ("PrivateUsers", "PrivateNetwork", "IPAddressDeny",
                  "DynamicUser"):
            assert ("Service", k) not in d, "%s: %s= breaks tlsfwd" % (unit, k)
        # The config is checked before the start, with the same file.
        pre = directive(path, "Service", "ExecStartPre")
        start = directive(path, "Service", "ExecStart")
        assert len(pre) == 1 and len(start) == 1
        assert pre[0].split()[:2] == ["/usr/bin/tlsfwd", "-t"]
        assert start[0].split()[0] == "/usr/bin/tlsfwd"
        assert pre[0].split()[2:] == start[0].split()[1:]
        assert start[0].split()[1] == "-c"
        # Reload: the same check, then SIGHUP.
        assert directive(path, "Service", "ExecReload") == [
            pre[0], "/bin/kill -HUP $MAINPID"]


def test_template_service_matches_main_service():
    """tlsfwd@.service is tlsfwd.service per configuration file: same settings
    except the description, the file and the runtime directory."""
    main = unit_directives(os.path.join(SYSTEMD_DIR, "tlsfwd.service"))
    inst = unit_directives(os.path.join(SYSTEMD_DIR, "tlsfwd@.service"))
    expect = []
    for s, k, v in main:
        v = v.replace("/etc/tlsfwd/tlsfwd.ini", "/etc/tlsfwd/%i.ini")
        if k == "Description":
            v += " (%i)"
        if k == "RuntimeDirectory":
            v += "-%i"
        expect.append((s, k, v))
    assert inst == expect


def test_socket_matches_example_config():
    """tlsfwd.socket feeds [example] of conf/tlsfwd.ini at its listen address."""
    sock = os.path.join(SYSTEMD_DIR, "tlsfwd.socket")
    cp = configparser.ConfigParser(inline_comment_prefixes=(" ;",))
    cp.read(os.path.join(REPO, "conf", "tlsfwd.ini"))
    (name,) = directive(sock, "Socket", "FileDescriptorName")
    assert name in cp.sections() and name != "global"
    assert directive(sock, "Socket", "ListenStream") == [cp[name]["listen"]]
    assert directive(sock, "Socket", "Service") == ["tlsfwd.service"]
    tsock = os.path.join(SYSTEMD_DIR, "tlsfwd@.socket")
    assert directive(tsock, "Socket", "FileDescriptorName") == ["%i"]
    assert directive(tsock, "Socket", "Service") == ["tlsfwd@%i.service"]


def test_sysusers_creates_the_unit_user(tmp_path):
    root = str(tmp_path)
    os.makedirs(os.path.join(root, "etc"))
    r = run([tool("systemd-sysusers"), "--root=" + root,
             os.path.join(SYSTEMD_DIR, "tlsfwd.sysusers")])
    assert r.returncode == 0, text(r.stderr)
    with open(os.path.join(root, "etc", "passwd"), encoding="utf-8") as f:
        users = {l.split(":")[0]: l.strip().split(":") for l in f}
    with open(os.path.join(root, "etc", "group"), encoding="utf-8") as f:
        groups = {l.split(":")[0]: l.strip().split(":") for l in f}
    u, g = users["tlsfwd"], groups["tlsfwd"]
    assert 0 < int(u[2]) < 1000 and u[3] == g[2], (u, g)
    assert u[6] in ("/usr/sbin/nologin", "/sbin/nologin")
    for unit in SERVICES:
        path = os.path.join(SYSTEMD_DIR, unit)
        assert directive(path, "Service", "User") == ["tlsfwd"]
        assert directive(path, "Service", "Group") == ["tlsfwd"]


# ---------------------------------------------------------------------------
# Man pages
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("page", sorted(MAN_PAGES))
def test_man_lint_groff(page):
    r = run([tool("groff"), "-ww", "-man", "-z", os.path.join(REPO, page)])
    out = text(r.stdout) + text(r.stderr)
    assert r.returncode == 0 and out == "", out


@pytest.mark.parametrize("page", sorted(MAN_PAGES))
def test_man_lint_mandoc(page):
    r = run([tool("mandoc"), "-T", "lint", "-W", "warning",
             os.path.join(REPO, page)])
    out = text(r.stdout) + text(r.stderr)
    assert r.returncode == 0 and out == "", out


@pytest.mark.parametrize("page", sorted(MAN_PAGES))
def test_man_renders(page):
    r = run([tool("man"), "-l", os.path.join(REPO, page)],
            env=clean_env(MANWIDTH="80"))
    out = text(r.stdout)
    assert r.returncode == 0 and text(r.stderr) == "", text(r.stderr)
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "FILES", "SEE ALSO"):
        assert re.search(r"^%s$" % section, out, re.M), section
    long_lines = [l for l in out.splitlines() if len(l) > 80]
    assert not long_lines, long_lines


def _option_letters():
    with open(os.path.join(REPO, "daemon", "main.c"), encoding="utf-8") as f:
        m = re.search(r'getopt\(argc, argv, "([^"]+)"\)', f.read())
    assert m, "getopt() call not found in daemon/main.c"
    return [c for c in m.group(1) if c.isalpha()]


def test_tlsfwd_8_documents_options_signals_environment_exit_codes():
    with open(os.path.join(REPO, "daemon", "tlsfwd.8"), encoding="utf-8") as f:
        page = f.read()
    for c in _option_letters():
        assert re.search(r"^\.TP\n\.BI? \\-%s\b" % c, page, re.M), "-" + c
    for word in ("SIGTERM", "SIGINT", "SIGHUP", "NOTIFY_SOCKET",
                 "WATCHDOG_USEC", "LISTEN_FDS", "LISTEN_FDNAMES",
                 "JOURNAL_STREAM", "/etc/tlsfwd/tlsfwd.ini"):
        assert word in page, word
    exit_codes = re.search(r"^\.SH EXIT STATUS\n(.*?)^\.SH", page, re.M | re.S)
    assert exit_codes
    assert re.findall(r"^\.TP\n\.B (\d)$", exit_codes.group(1), re.M) == \
        ["0", "1", "2"]


def _config_keys():
    """Keys from the daemon's key tables: {'global': [...], 'service': [...]}."""
    with open(os.path.join(REPO, "daemon", "config_keys.c"), encoding="utf-8") as f:
        src = f.read()
    out = {}
    for table, kind in (("config_global_keys", "global"), ("config_service_keys", "service")):
        m = re.search(r"%s\[\] = \{(.*?)\n\};" % table, src, re.S)
        assert m, "%s not found in daemon/config_keys.c" % table
        out[kind] = re.findall(r'\{ "([a-z_0-9]+)", \w+,', m.group(1))
        assert out[kind]
    return out


def test_tlsfwd_ini_5_documents_every_key_with_default_and_example():
    with open(os.path.join(REPO, "conf", "tlsfwd.ini.5"),
              encoding="utf-8") as f:
        page = f.read()
    keys = _config_keys()
    for kind, section in (("global", "GLOBAL SECTION"),
                          ("service", "SERVICE SECTIONS")):
        m = re.search(r"^\.SH %s\n(.*?)^\.SH" % section, page, re.M | re.S)
        assert m, section
        items = re.split(r"^\.TP\n", m.group(1), flags=re.M)[1:]
        documented = {re.match(r"\.B[IR]? (\w+)", it).group(1): it
                      for it in items}
        for key in keys[kind]:
            assert key in documented, "%s: '%s' not documented" % (section,
                                                                   key)
            it = documented[key]
            assert "Default" in it, "%s: no default" % key
            assert re.search(r"^Example:\n\.B \\%%%s = \S" % key, it, re.M), \
                "%s: no example" % key
        extra = set(documented) - set(keys[kind])
        assert not extra, "documented but not in daemon/config_keys.c: %s" % extra


# ---------------------------------------------------------------------------
# make install
# ---------------------------------------------------------------------------

EXPECTED_TREE = {
    "usr/bin/tlsfwd",
    "etc/tlsfwd/tlsfwd.ini",
    "usr/lib/sysusers.d/tlsfwd.conf",
    "usr/share/man/man8/tlsfwd.8",
    "usr/share/man/man5/tlsfwd.ini.5",
} | {"usr/lib/systemd/system/" + u for u in UNITS}


def test_install_tree(tlsfwd_bin, tmp_path):
    dest = str(tmp_path / "root")
    make_install(tlsfwd_bin, dest, "PREFIX=/usr")
    assert tree(dest) == EXPECTED_TREE
    with open(tlsfwd_bin, "rb") as a, \
            open(os.path.join(dest, "usr/bin/tlsfwd"), "rb") as b:
        assert a.read() == b.read()
    assert os.stat(os.path.join(dest, "usr/bin/tlsfwd")).st_mode & 0o777 \
        == 0o755
    for f in EXPECTED_TREE - {"usr/bin/tlsfwd"}:
        assert os.stat(os.path.join(dest, f)).st_mode & 0o777 == 0o644, f
    # With PREFIX=/usr the units are installed exactly as in systemd/.
    for u in UNITS:
        with open(os.path.join(SYSTEMD_DIR, u), "rb") as a, \
                open(os.path.join(dest, "usr/lib/systemd/system", u),
                     "rb") as b:
            assert a.read() == b.read(), u
    for src, inst in MAN_PAGES.items():
        with open(os.path.join(REPO, src), "rb") as a, \
                open(os.path.join(dest, "usr", inst), "rb") as b:
            assert a.read() == b.read(), src

    # A second install keeps the operator's configuration.
    conf = os.path.join(dest, "etc/tlsfwd/tlsfwd.ini")
    with open(conf, "a", encoding="utf-8") as f:
        f.write("; edited by the operator\n")
    with open(conf, "rb") as f:
        edited = f.read()
    make_install(tlsfwd_bin, dest, "PREFIX=/usr")
    with open(conf, "rb") as f:
        assert f.read() == edited
    assert tree(dest) == EXPECTED_TREE


def test_install_tree_verifies_in_root(tlsfwd_bin, tmp_path):
    """`systemd-analyze verify --root=DESTDIR`: the installed units find the
    installed binary and man pages. The host's unit files and kill(1) are
    added to the tree for the dependencies systemd always resolves."""
    dest = str(tmp_path / "root")
    make_install(tlsfwd_bin, dest, "PREFIX=/usr")
    host_units = None
    for d in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        if os.path.exists(os.path.join(d, "sysinit.target")):
            host_units = d
            break
    assert host_units, "sysinit.target not found: install the Debian " \
        "package systemd"
    shutil.copytree(host_units, os.path.join(dest, "run/systemd/system"),
                    symlinks=True)
    kill = os.path.realpath("/bin/kill")
    assert os.access(kill, os.X_OK), "/bin/kill not found: install the " \
        "Debian package procps"
    os.makedirs(os.path.join(dest, "bin"))
    shutil.copy(kill, os.path.join(dest, "bin/kill"))
    for unit in UNITS:
        r = run([tool("systemd-analyze"), "verify", "--recursive-errors=yes",
                 "--root=" + dest, unit],
                env=clean_env(MANPATH=os.path.join(dest, "usr/share/man")))
        out = text(r.stdout) + text(r.stderr)
        assert r.returncode == 0 and out == "", (
            "verify --root %s (rc %d):\n%s" % (unit, r.returncode, out))


def test_install_other_prefix_rewrites_unit_paths(tlsfwd_bin, tmp_path):
    dest = str(tmp_path / "root")
    make_install(tlsfwd_bin, dest, "PREFIX=/opt/tf", "SYSCONFDIR=/etc/tf")
    files = tree(dest)
    assert "opt/tf/bin/tlsfwd" in files
    assert "etc/tf/tlsfwd/tlsfwd.ini" in files
    assert "opt/tf/lib/sysusers.d/tlsfwd.conf" in files
    assert "opt/tf/share/man/man8/tlsfwd.8" in files
    for u in SERVICES:
        path = os.path.join(dest, "opt/tf/lib/systemd/system", u)
        for key in ("ExecStartPre", "ExecStart", "ExecReload"):
            v = directive(path, "Service", key)[0]
            assert exec_path(v) == "/opt/tf/bin/tlsfwd", v
            assert v.split()[-1].startswith("/etc/tf/tlsfwd/"), v
        with open(path, encoding="utf-8") as f:
            s = f.read()
        assert "/usr/bin/tlsfwd" not in s and "/etc/tlsfwd/" not in s


# ---------------------------------------------------------------------------
# The unit's system call filter against what tlsfwd really calls
# ---------------------------------------------------------------------------

def _syscall_set(*groups):
    """The system calls of the named @groups and names, expanded."""
    out, todo, seen = set(), list(groups), set()
    while todo:
        g = todo.pop()
        if not g.startswith("@"):
            out.add(g)
            continue
        if g in seen:
            continue
        seen.add(g)
        r = run([tool("systemd-analyze"), "syscall-filter", "--no-pager", g])
        assert r.returncode == 0, text(r.stderr)
        for line in text(r.stdout).splitlines()[1:]:
            line = line.strip()
            if line and not line.startswith("#"):
                todo.append(line)
    return out


def _unit_syscall_filter(unit):
    allow, deny = None, set()
    for v in directive(os.path.join(SYSTEMD_DIR, unit), "Service",
                       "SystemCallFilter"):
        if v.startswith("~"):
            deny |= _syscall_set(*v[1:].split())
        else:
            allow = (allow or set()) | _syscall_set(*v.split())
    assert allow, "%s: no allow-list SystemCallFilter=" % unit
    return allow - deny


class _TLSUpstream:
    """A TLS server on 127.0.0.1:0 answering every request line with 'hello'."""

    def __init__(self, cert, key):
        import socket
        import ssl
        import threading
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(1.0)
        self.port = self.sock.getsockname()[1]
        self.stop = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        import socket
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                c.settimeout(10)
                with self.ctx.wrap_socket(c, server_side=True) as t:
                    t.recv(1024)
                    t.sendall(b"hello\n")
            except OSError:
                pass

    def close(self):
        self.stop = True
        self.sock.close()
        self.thread.join(5)


def _relay_once(port):
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"ping\n")
        data = b""
        while True:
            b = s.recv(1024)
            if not b:
                return data
            data += b


def test_syscalls_allowed_by_unit_filter(tlsfwd_bin, pki, tmp_path):
    """Under strace: `tlsfwd -t`, then start with NOTIFY_SOCKET and
    WATCHDOG_USEC, a relayed connection, SIGHUP, another connection, SIGTERM.
    Every system call made must pass the units' SystemCallFilter=, or
    systemd would make it fail with EPERM."""
    import signal
    import socket
    import threading
    import time

    strace = tool("strace")
    allowed = _unit_syscall_filter("tlsfwd.service")
    assert allowed == _unit_syscall_filter("tlsfwd@.service")

    up = _TLSUpstream(pki["server"], pki["server_key"])
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_path = str(tmp_path / "notify")
    notify.bind(notify_path)
    notify.settimeout(10)
    proc = None
    try:
        conf = tmp_path / "tlsfwd.ini"
        conf.write_text(
            "[global]\nshutdown_timeout = 2s\n\n[s]\nlisten = 127.0.0.1:0\n"
            "upstream = 127.0.0.1:%d\nsni = localhost\nca_file = %s\n"
            % (up.port, pki["ca"]))
        # LeakSanitizer cannot run under ptrace; the other ASan checks can.
        env = clean_env(ASAN_OPTIONS="detect_leaks=0:abort_on_error=1")
        trace_t = str(tmp_path / "trace-t")
        r = run([strace, "-f", "-qq", "-o", trace_t, tlsfwd_bin, "-t", "-c",
                 str(conf)], env=env)
        assert r.returncode == 0, text(r.stderr)

        trace = str(tmp_path / "trace")
        env.update(NOTIFY_SOCKET=notify_path, WATCHDOG_USEC="200000")
        proc = subprocess.Popen([strace, "-f", "-qq", "-o", trace, tlsfwd_bin,
                                 "-c", str(conf)], env=env,
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        lines = []
        port_ready = threading.Event()
        port = []

        def drain():
            for raw in proc.stderr:
                line = text(raw)
                lines.append(line)
                m = re.search(r"event=listening .*listen=127\.0\.0\.1:(\d+)",
                              line)
                if m:
                    port.append(int(m.group(1)))
                    port_ready.set()
        threading.Thread(target=drain, daemon=True).start()

        def wait_notify(word):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                msg = text(notify.recv(4096))
                if word in msg.split("\n"):
                    return
            pytest.fail("no %s from tlsfwd; log:\n%s" % (word,
                                                          "".join(lines)))

        wait_notify("READY=1")
        assert port_ready.wait(10), "".join(lines)
        wait_notify("WATCHDOG=1")
        with open(trace, encoding="utf-8") as f:
            pid = int(f.readline().split()[0])
        assert _relay_once(port[0]) == b"hello\n", "".join(lines)
        os.kill(pid, signal.SIGHUP)
        wait_notify("RELOADING=1")
        wait_notify("READY=1")
        assert _relay_once(port[0]) == b"hello\n", "".join(lines)
        os.kill(pid, signal.SIGTERM)
        wait_notify("STOPPING=1")
        assert proc.wait(20) == 0, "".join(lines)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        notify.close()
        up.close()

    used = set()
    for path in (trace_t, trace):
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                m = re.match(r"\d+\s+(?:<\.\.\. )?([a-z_0-9]+)[( ]", line)
                if m:  # not "+++ exited" nor "--- SIGHUP" lines
                    used.add(m.group(1))
    assert {"socket", "accept4", "connect", "sendmsg"} <= used, used
    assert used <= allowed, (
        "tlsfwd calls %s, which the units' SystemCallFilter= refuses"
        % sorted(used - allowed))
