"""The Debian package (debian/, `make deb`), checked without building it.

Hermetic and fast: the files of debian/ are read, and `make install` runs
into a temporary directory with the arguments debian/rules gives it, on the
binary under test (not rebuilt). Building the package is `make deb`'s job,
not `make check`'s.
"""

import os
import re
import shutil
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DEBIAN = os.path.join(REPO, "debian")

UNITS = ["tlsfwd.service", "tlsfwd@.service", "tlsfwd.socket", "tlsfwd@.socket"]
# What the package must hold, as `make install` puts it there for
# debian/rules: the units where dh_installsystemd handles them on Debian 12,
# the sysusers.d file where dh_installsysusers finds it (it then creates the
# user in the postinst), /etc/tlsfwd/tlsfwd.ini (a conffile, being in /etc).
PACKAGE_TREE = {
    "usr/bin/tlsfwd",
    "etc/tlsfwd/tlsfwd.ini",
    "usr/lib/sysusers.d/tlsfwd.conf",
    "usr/share/man/man8/tlsfwd.8",
    "usr/share/man/man5/tlsfwd.ini.5",
} | {"lib/systemd/system/" + u for u in UNITS}


def read(*path):
    with open(os.path.join(REPO, *path), encoding="utf-8") as f:
        return f.read()


def makefile_version():
    m = re.search(r"^VERSION\s*:=\s*(\S+)\s*$", read("Makefile"), re.M)
    assert m, "no `VERSION := ...` line in the Makefile"
    return m.group(1)


def changelog_top():
    """(source, version) of the first debian/changelog entry."""
    first = read("debian", "changelog").splitlines()[0]
    m = re.match(r"^(\S+) \(([^()\s]+)\) [^;]+; urgency=\S+$", first)
    assert m, "debian/changelog: bad first line %r" % first
    return m.group(1), m.group(2)


def control_field(field, text=None):
    """A field of debian/control's source paragraph, continuation lines joined."""
    text = text if text is not None else read("debian", "control").split("\n\n")[0]
    m = re.search(r"^%s:(.*(?:\n[ \t].*)*)" % re.escape(field), text, re.M)
    assert m, "debian/control has no %s field" % field
    return " ".join(m.group(1).split())


def rules_install_args():
    m = re.search(r"^INSTALL_ARGS\s*:=\s*(.+)$", read("debian", "rules"), re.M)
    assert m, "debian/rules has no `INSTALL_ARGS := ...` line"
    return m.group(1).split()


def test_version_from_one_place(tlsfwd_bin):
    """Makefile VERSION, debian/changelog, `tlsfwd -V` and the man pages
    agree; the package is native, so its version is VERSION exactly and the
    file is tlsfwd_VERSION_ARCH.deb."""
    version = makefile_version()
    source, deb_version = changelog_top()
    assert source == "tlsfwd"
    assert control_field("Source") == "tlsfwd"
    assert deb_version == version, (
        "debian/changelog says %s, the Makefile's VERSION %s: bump both "
        "(a new changelog entry on top)" % (deb_version, version))
    assert read("debian", "source", "format").strip() == "3.0 (native)"
    out = subprocess.run([tlsfwd_bin, "-V"], stdout=subprocess.PIPE,
                         check=True, timeout=30).stdout.decode()
    assert out.split()[:2] == ["tlsfwd", version], out
    for page in ("daemon/tlsfwd.8", "conf/tlsfwd.ini.5"):
        th = [ln for ln in read(page).splitlines() if ln.startswith(".TH ")]
        assert len(th) == 1 and '"tlsfwd %s"' % version in th[0], (page, th)


def test_build_depends_cover_the_libraries():
    """Every -dev package `make deps` installs to build tlsfwd is a
    Build-Depends (the sanitizer runtime is for `make check` only)."""
    m = re.search(r"^DEB_PKGS\s*:=((?:.*\\\n)*.*)$", read("Makefile"), re.M)
    assert m, "no DEB_PKGS in the Makefile"
    dev = {p for p in m.group(1).replace("\\\n", " ").split()
           if p.endswith("-dev")} - {"libclang-rt-dev"}
    assert {"libgnutls28-dev", "libev-dev", "libinih-dev",
            "libsystemd-dev"} <= dev
    bdeps = {re.split(r"[\s(<\[]", d.strip())[0]
             for d in control_field("Build-Depends").split(",") if d.strip()}
    need = dev | {"pkg-config", "dh-sequence-installsysusers"}
    assert need <= bdeps, "missing from Build-Depends: %s" % sorted(need - bdeps)
    assert "debhelper-compat (= 13)" in control_field("Build-Depends")
    binary = read("debian", "control").split("\n\n")[1]
    depends = control_field("Depends", binary)
    assert "${shlibs:Depends}" in depends
    # The shipped example has no ca_file: it trusts the system store, and
    # `tlsfwd -t` rejects it while that store is empty.
    if not re.search(r"^ca_file\s*=", read("conf", "tlsfwd.ini"), re.M):
        assert "ca-certificates" in depends


def test_package_tree_is_make_install(tlsfwd_bin, tmp_path):
    """`make install` with debian/rules' arguments installs exactly the
    package's files, with the units and man pages as in the tree."""
    args = rules_install_args()
    assert "PREFIX=/usr" in args and "SYSCONFDIR=/etc" in args
    rules = read("debian", "rules")
    # The package builds in debian/build: `make clean` (rm -rf build) and
    # BUILD=build would both hit the developer's build/.
    assert "BUILD=debian/build" in rules
    assert not re.search(r"^\t.*\bmake\b.*\bclean\b", rules, re.M)
    assert "dh_installsystemd --no-enable" in rules

    make = shutil.which("make")
    assert make, "make not found: install the Debian package make"
    build = os.path.dirname(tlsfwd_bin)
    dest = str(tmp_path / "pkg")
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    r = subprocess.run(
        [make, "-C", REPO, "--no-print-directory",
         "-o", os.path.join(build, "tlsfwd"), "BUILD=" + build,
         "install", "DESTDIR=" + dest] + args,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=120,
        check=False)
    assert r.returncode == 0, "make install failed:\n%s%s" % (
        r.stdout.decode(), r.stderr.decode())
    got = {os.path.relpath(os.path.join(d, f), dest)
           for d, _, files in os.walk(dest) for f in files}
    assert got == PACKAGE_TREE, "extra: %s, missing: %s" % (
        sorted(got - PACKAGE_TREE), sorted(PACKAGE_TREE - got))
    for u in UNITS:
        assert read("systemd", u) == read(dest, "lib/systemd/system", u), u
    assert read("systemd", "tlsfwd.sysusers") == \
        read(dest, "usr/lib/sysusers.d/tlsfwd.conf")
    assert read("conf", "tlsfwd.ini") == read(dest, "etc/tlsfwd/tlsfwd.ini")


def test_postinst_keeps_debhelper_snippets():
    post = read("debian", "tlsfwd.postinst")
    assert post.startswith("#!/bin/sh\nset -e\n")
    assert "#DEBHELPER#" in post
    # The note names the file to edit and how to start the service.
    assert "/etc/tlsfwd/tlsfwd.ini" in post and "systemctl enable --now tlsfwd" in post


def test_rules_executable():
    assert os.access(os.path.join(DEBIAN, "rules"), os.X_OK)
