# tests/audit/audit.mk - the long-running audits, included by the top Makefile.
#
#   make valgrind     build with -O1 -g in $(VG_BUILD), then run the main
#                     integration tests with every tlsfwd under memcheck;
#                     any error or definite leak fails the test it came from
#   make soak         SOAK_SECONDS (default 600) of mixed load against one
#                     tlsfwd: samples RSS, descriptors and CPU each second into
#                     $(SOAK_BUILD)/soak.csv, plots bench/results/soak.png and
#                     writes bench/results/soak.md; fails on a crash or drift
#
# Both build in their own directory, so build/ and build/asan are not touched.

VG_BUILD	?= build/valgrind
VG_LOGS		:= $(VG_BUILD)/logs
# Every tlsfwd the tests start runs as $(VG_CMD) tlsfwd ...; {log} is a fresh
# file per process (tests/integration/harness/wrapper.py, TLSFWD_WRAPPER).
# Only definite leaks count: GnuTLS and p11-kit keep global state for the
# life of the process ("still reachable").
VG_CMD		:= valgrind --leak-check=full \
		   --errors-for-leak-kinds=definite --error-exitcode=1 \
		   --track-fds=yes --num-callers=30 \
		   --suppressions=$(abspath tests/audit/valgrind.supp) \
		   --log-file={log}
# Under memcheck tlsfwd runs some 20-50 times slower: the tests' waits for
# tlsfwd (log lines, exit, socket timeouts) are multiplied by this.
VG_SLOW		?= 8
# -O1 keeps the traces readable. gcc's -O1 (unlike -O2) inlines enough to
# warn that snprintf may truncate a service name, which valid_service_name()
# has already limited: not an error here.
VG_CFLAGS	:= -O1 -g -Wno-format-truncation

# The main cases: relay, failures, half-close, reload, signals, verification
# and every TLS feature, the fault matrix, access control, workers, log
# formats, the command line (-t and start-up errors), notify, socket
# activation, journal, privileges: 300 tests in about 6 minutes. Left
# out: test_systemd_units.py (systemd and strace start the binary
# themselves), test_audit.py and test_config_mutation.py (10 000 connections
# and 400 configurations: hours under memcheck). The tests that measure RSS,
# CPU time, timing or descriptor limits skip themselves under TLSFWD_WRAPPER.
VG_TESTS	?= relay failures halfclose reload signals verify tls_alpn \
		   tls_client_cert tls_expiry tls_pinning tls_policy \
		   tls_resumption tls_revocation tls_pkcs11 fault_matrix access \
		   workers logformat cli robustness notify socket_activation \
		   journal privileges
VG_PYTEST_ARGS	?=

.PHONY: valgrind soak soak-deps

# Every report stays in $(VG_LOGS) (one per tlsfwd process); a test fails on
# its own process's errors, and the totals are printed at the end.
valgrind: deps
	CFLAGS="$(VG_CFLAGS)" $(MAKE) --no-print-directory BUILD=$(VG_BUILD) all
	@rm -rf $(VG_LOGS) && mkdir -p $(VG_LOGS)
	@TLSFWD=$(abspath $(VG_BUILD)/tlsfwd) TLSFWD_WRAPPER="$(VG_CMD)" \
	    TLSFWD_SLOW=$(VG_SLOW) TLSFWD_WRAPPER_LOGS=$(abspath $(VG_LOGS)) \
	    $(PYTHON) -m pytest -q -p no:cacheprovider -rs \
	    $(VG_TESTS:%=tests/integration/test_%.py) $(VG_PYTEST_ARGS) \
	    && rc=0 || rc=$$?; \
	cat $(VG_LOGS)/*.log | awk ' \
	    /ERROR SUMMARY:/ { n++; e += $$4 } \
	    /definitely lost:/ { gsub(",", ""); d += $$4; db += $$7 } \
	    /possibly lost:/ { gsub(",", ""); p += $$4 } \
	    END { printf "valgrind: %d tlsfwd processes, %d errors, " \
		"definitely lost %d bytes in %d blocks (possibly lost %d " \
		"bytes, not counted); reports in $(VG_LOGS)/\n", \
		n, e, d, db, p }'; \
	exit $$rc

SOAK_BUILD	?= build/soak
SOAK_SECONDS	?= 600
SOAK_ARGS	?=
# nginx is the upstream, wrk and curl the load, gnuplot draws the PNG.
SOAK_PKGS	:= nginx wrk curl openssl gnuplot-nox

# The same installer as `make deps`, for the soak's packages (after it, so
# that two apt-get never run at once under make -j).
soak-deps: deps
	@$(MAKE) --no-print-directory deps DEB_PKGS="$(SOAK_PKGS)"

# A normal (-O2 -g) build in its own directory; the run's CSV, log and
# gnuplot script stay in $(SOAK_BUILD), the PNG and summary go to
# bench/results/.
soak: soak-deps
	$(MAKE) --no-print-directory BUILD=$(SOAK_BUILD) all
	$(PYTHON) tests/audit/soak.py --tlsfwd $(SOAK_BUILD)/tlsfwd \
	    --seconds $(SOAK_SECONDS) --out $(SOAK_BUILD) $(SOAK_ARGS)
