# tlsfwd - see README.md. `make demo` and `make check` are the two commands.

VERSION	:= 0.1.0
PREFIX	?= /usr/local
DESTDIR	?=
SYSCONFDIR ?= /etc
BUILD	?= build
CONFIG	?= conf/tlsfwd.ini
PYTHON	?= /usr/bin/python3

CC	?= cc
WARN	:= -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
	   -Wmissing-prototypes -Wpointer-arith -Wcast-qual -Wformat=2 \
	   -Wundef -Wvla
# The libraries' flags come from pkg-config when a recipe first needs them,
# never when make reads this file: on a fresh machine `make deps` installs
# the -dev packages after that. Asked once per make; a missing library is an
# error that says what to run, not a link with empty flags.
PKG_LIBS := gnutls inih libsystemd libcares
pkg_config = $(if $(shell pkg-config --exists $(PKG_LIBS) 2>/dev/null && echo y),$\
	$(shell pkg-config $(1) $(PKG_LIBS)),$\
	$(error pkg-config finds no $(PKG_LIBS) (Debian: libgnutls28-dev libinih-dev libsystemd-dev libc-ares-dev): run `make deps`))
PKG_CFLAGS = $(eval PKG_CFLAGS := $(call pkg_config,--cflags))$(PKG_CFLAGS)
PKG_LDLIBS = $(eval PKG_LDLIBS := $(call pkg_config,--libs))$(PKG_LDLIBS)

CFLAGS	?= -O2 -g
CFLAGS	+= -std=c11 -pthread -D_GNU_SOURCE -DTLSFWD_VERSION='"$(VERSION)"' $(WARN) \
	   $(PKG_CFLAGS)
LIBS	= $(PKG_LDLIBS) -lev -lm -pthread

# SAN=1: AddressSanitizer + UndefinedBehaviorSanitizer, any report is fatal.
ifeq ($(SAN),1)
CFLAGS	+= -O1 -fsanitize=address,undefined -fno-sanitize-recover=all \
	   -fno-omit-frame-pointer
LDFLAGS	+= -fsanitize=address,undefined
endif

SRCS	:= $(wildcard daemon/*.c)
OBJS	:= $(SRCS:daemon/%.c=$(BUILD)/obj/%.o)
LIBOBJS	:= $(filter-out $(BUILD)/obj/main.o,$(OBJS))
UNITS	:= $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(wildcard tests/unit/test_*.c))

# Debian packages to build, test and demo; `make deps` installs what is missing.
DEB_PKGS := gcc make pkg-config libgnutls28-dev libev-dev libinih-dev \
	    libsystemd-dev libc-ares-dev python3-dnspython \
	    libcmocka-dev clang python3 python3-pytest gnutls-bin openssl \
	    curl ca-certificates systemd mandoc groff-base man-db strace \
	    softhsm2 iproute2 valgrind procps libclang-rt-dev nginx \
	    redis-server redis-tools slapd ldap-utils mosquitto mosquitto-clients \
	    squid haproxy prometheus

SAN_ENV	:= ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1 \
	   UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

.PHONY: all deps check check-plain check-asan check-fresh unit integration demo \
	run install clean bench bench-wan profile

all: $(BUILD)/tlsfwd

$(BUILD)/tlsfwd: $(OBJS)
	$(CC) $(LDFLAGS) -o $@ $(OBJS) $(LIBS)

$(BUILD)/obj/%.o: daemon/%.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(LIBOBJS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Wno-missing-prototypes -Idaemon $(LDFLAGS) -o $@ $< \
	    $(LIBOBJS) $(LIBS) -lcmocka

-include $(OBJS:.o=.d)

# The user-space delay line of `make bench-wan` (and of its test).
$(BUILD)/delayline: bench/delayline.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $<

deps:
	@missing=""; \
	for p in $(DEB_PKGS); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | \
		    grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
		echo "deps: installing$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		    apt-get install -y -qq --no-install-recommends $$missing; \
	else \
		echo "deps: missing Debian packages:$$missing"; \
		echo "deps: run: sudo apt-get install -y$$missing"; \
		exit 1; \
	fi

unit: $(UNITS)
	@failed=""; for t in $(UNITS); do \
		echo "== $$t"; $(SAN_ENV) $$t || failed="$$failed $$t"; \
	done; \
	if [ -n "$$failed" ]; then echo "unit: FAILED:$$failed"; exit 1; fi

integration: $(BUILD)/tlsfwd $(BUILD)/delayline
	TLSFWD=$(abspath $(BUILD)/tlsfwd) DELAYLINE=$(abspath $(BUILD)/delayline) \
	    $(SAN_ENV) $(PYTHON) -m pytest -q -rs \
	    -p no:cacheprovider tests/integration

# Every test, with gcc, then again with clang under ASan+UBSan.
check: deps
	$(MAKE) check-plain
	$(MAKE) check-asan

check-plain: all unit integration

check-asan:
	$(MAKE) BUILD=build/asan CC=clang SAN=1 all unit integration

# `make demo` then `CI=true make check` in a pristine minimal Debian root
# with a clean clone of HEAD (tests/fresh/): run it before landing a change
# to this Makefile, `deps`, packaging or the tools a test needs. Root only;
# the first run builds the base root (cached in /var/cache/tlsfwd-fresh).
check-fresh:
	tests/fresh/check-fresh.sh

# Targets that need the packages run make again once `deps` has installed
# them, so that nothing of this make (nor of -j) builds before they are in.
demo: deps
	@$(MAKE) --no-print-directory all
	tests/demo.sh $(BUILD)/tlsfwd

run: all
	$(BUILD)/tlsfwd -c $(CONFIG)

# tlsfwd against stunnel4, haproxy, nginx stream and socat on this machine
# (installs those peers itself); see "Performance" in README.md.
# `make bench BENCH_ARGS=--quick` for a smoke run, `BENCH_ARGS=--big` for
# 50000 idle connections.
BENCH_ARGS ?=
bench: deps
	@$(MAKE) --no-print-directory all
	$(PYTHON) bench/bench.py --tlsfwd $(BUILD)/tlsfwd $(BENCH_ARGS)

# Time to first byte over a real round trip (default 20 ms): two network
# namespaces joined by bench/delayline, the upstream across it, each proxy and
# the client on this side (root; installs the peers like bench). See
# "Over a real round trip" in README.md. `BENCH_WAN_ARGS=--quick` for a smoke
# run, `BENCH_WAN_ARGS=--rtt-ms 50` for another RTT.
BENCH_WAN_ARGS ?=
bench-wan: deps
	@$(MAKE) --no-print-directory all $(BUILD)/delayline
	$(PYTHON) bench/wan.py --tlsfwd $(BUILD)/tlsfwd --delayline $(BUILD)/delayline \
	    $(BENCH_WAN_ARGS)

# Instructions per connection, round trip and byte under callgrind: counts
# that repeat on a busy machine (bench/results/profile.md).
PROFILE_ARGS ?=
profile: deps
	@$(MAKE) --no-print-directory all
	$(PYTHON) bench/profile.py --tlsfwd $(BUILD)/tlsfwd $(PROFILE_ARGS)

# Units, sysusers.d file and man pages too.  The units in systemd/ name
# /usr/bin/tlsfwd and /etc/tlsfwd/ (right for PREFIX=/usr, SYSCONFDIR=/etc);
# the installed copies name $(PREFIX)/bin/tlsfwd and $(SYSCONFDIR)/tlsfwd/.
install: SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
install: SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
install: MANDIR ?= $(PREFIX)/share/man
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(SYSCONFDIR)/tlsfwd \
	    $(DESTDIR)$(SYSTEMDUNITDIR) $(DESTDIR)$(SYSUSERSDIR) \
	    $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5
	install -m 755 $(BUILD)/tlsfwd $(DESTDIR)$(PREFIX)/bin/tlsfwd
	for u in tlsfwd.service tlsfwd@.service tlsfwd.socket tlsfwd@.socket; do \
		sed -e 's|/usr/bin/tlsfwd|$(PREFIX)/bin/tlsfwd|g' \
		    -e 's|/etc/tlsfwd/|$(SYSCONFDIR)/tlsfwd/|g' systemd/$$u \
		    > $(DESTDIR)$(SYSTEMDUNITDIR)/$$u && \
		chmod 644 $(DESTDIR)$(SYSTEMDUNITDIR)/$$u || exit 1; \
	done
	install -m 644 systemd/tlsfwd.sysusers $(DESTDIR)$(SYSUSERSDIR)/tlsfwd.conf
	install -m 644 daemon/tlsfwd.8 $(DESTDIR)$(MANDIR)/man8/tlsfwd.8
	install -m 644 conf/tlsfwd.ini.5 $(DESTDIR)$(MANDIR)/man5/tlsfwd.ini.5
	@# Never overwrite a configuration the operator already has.
	[ -e $(DESTDIR)$(SYSCONFDIR)/tlsfwd/tlsfwd.ini ] || \
	    install -m 644 conf/tlsfwd.ini $(DESTDIR)$(SYSCONFDIR)/tlsfwd/tlsfwd.ini

# The Debian package (debian/): `dpkg-buildpackage -us -uc -b` on a copy of
# this tree in $(BUILD)/deb/src, so that neither the tree nor the objects in
# $(BUILD) change. Leaves ./tlsfwd_$(VERSION)_ARCH.deb, replacing older ones,
# for `apt install ./tlsfwd_*.deb`; the rest of the build's output stays in
# $(BUILD)/deb. Like `deps`, installs missing build dependencies (from
# debian/control) when run as root, and otherwise prints the command.
.PHONY: deb
deb:
	@if ! command -v dpkg-checkbuilddeps >/dev/null 2>&1 || \
	    ! dpkg-checkbuilddeps >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "deb: installing the build dependencies of debian/control"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			    apt-get build-dep -y -qq --no-install-recommends ./; \
		else \
			echo "deb: missing build dependencies (debian/control)"; \
			echo "deb: run: sudo apt-get build-dep -y --no-install-recommends ./"; \
			exit 1; \
		fi; \
	fi
	rm -rf $(BUILD)/deb
	mkdir -p $(BUILD)/deb/src
	tar -cf - --exclude=./.git --exclude=./build --exclude='./$(BUILD)' \
	    --exclude='./tlsfwd_*.deb' . | tar -xf - -C $(BUILD)/deb/src
	cd $(BUILD)/deb/src && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
	    dpkg-buildpackage -us -uc -b
	rm -f tlsfwd_*.deb
	cp $(BUILD)/deb/tlsfwd_$(VERSION)_*.deb .
	@ls -l tlsfwd_*.deb

# The package under a real systemd (tests/fresh/check-systemd.sh): a fresh
# bookworm root (as check-fresh) booted with `systemd-nspawn --boot`, the .deb
# installed with apt, then start after READY, a request, the journal fields,
# reload, stop, socket activation and `systemd-analyze security`, through
# systemctl and journalctl. Root; not part of `make check`; about 20 s once
# the base root is cached. Output in $(BUILD)/systemd.
.PHONY: check-systemd
check-systemd: deb
	CHECK_SYSTEMD_LOGS=$(abspath $(BUILD))/systemd \
	    tests/fresh/check-systemd.sh tlsfwd_$(VERSION)_$$(dpkg --print-architecture).deb

clean:
	rm -rf build

# make fuzz (libFuzzer), make valgrind, make soak: the long-running checks.
-include tests/fuzz/fuzz.mk tests/audit/audit.mk
