#!/usr/bin/env bash
# tests/fresh/check-systemd.sh - `make check-systemd`: the package under a
# real systemd, checked through systemctl and journalctl.
#
# The integration tests emulate systemd (a notify socket, LISTEN_FDS, a fake
# journald). This boots the real one: a pristine minimal Debian bookworm root
# (rootfs.sh) plus systemd, systemd-sysv, dbus and openssl, booted with
# `systemd-nspawn --boot` (its own network namespace: only loopback, so the
# fixed ports below never meet the host's), then `apt-get install` of the
# .deb inside the booted system, a throw-away PKI (tests/pki.py, made on this
# machine), an upstream `openssl s_server` as a transient unit, and:
#
#   install          apt installs it; the user exists; tlsfwd is not enabled
#   start-ready      `systemctl enable --now` returns once READY=1 came: the journal
#                    has tlsfwd's event=ready before systemd's "Started", and
#                    the listeners accept as soon as start returns
#   limits           LimitNOFILE: tlsfwd's soft limit is min(131072, the hard
#                    limit systemd itself has)
#   request          a request through the service gets the upstream's answer
#   refused-journal  `journalctl -u tlsfwd TLSFWD_RESULT=fail` finds the line
#                    of a refused upstream
#   reload-good      a good reload adds a service, same main process
#   reload-broken    a file `tlsfwd -t` refuses: reload fails, nothing is
#                    signalled, the old configuration serves, `systemctl
#                    status` shows the error
#   reload-bind      a file that passes -t but cannot be applied (a port in
#                    use): the old configuration serves, status says so
#   stop-drain       `systemctl stop` with a connection open: the listener
#                    closes, the connection completes, exit 0, Result=success
#   socket           tlsfwd.socket: systemd listens, the first connection
#                    starts tlsfwd with the socket (inherited=yes), again
#                    after a stop
#   security         `systemd-analyze security tlsfwd` <= 2.0 on the
#                    installed unit
#
# Prints one PASS/FAIL line per check, then "check-systemd: N passed, M
# failed" alone on the last line; exits non-zero if any check failed or the
# container could not be set up. Details (console, journal) in $logs
# (build/systemd/). Root only. Every mount and process ends with the run,
# also on failure or Ctrl-C: the work happens in new mount and pid
# namespaces, the container is powered off (then killed), and the cgroups
# nspawn made are removed.
#
#   check-systemd.sh [DEB]   default: the newest ./tlsfwd_*.deb (`make deb`)
#   CHECK_SYSTEMD_KEEP=1     keep the root afterwards (its path is printed)
set -euo pipefail

FRESH_NAME=check-systemd
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
. "$here/rootfs.sh"

# What the root gets before the package (the package brings the rest).
CT_PKGS="systemd systemd-sysv dbus openssl"
# Ports inside the container (its own network namespace).
P_EXAMPLE=8080 P_REFUSED=8081 P_ADDED=8082 P_UPSTREAM=8443 P_CLOSED=8444
MAX_EXPOSURE=2.0
NOFILE_UNIT=131072

now_ms() { date +%s%3N; }

# ---------------------------------------------------------------- --prepare
# In a private mount namespace: the root's apt installs systemd and friends
# and downloads what the package needs (the booted container has no network).
# The root keeps its own download directory, seeded from the shared cache
# and added back to it afterwards: apt locks the directory it downloads to
# and does not wait, so sharing it would fail next to a check-fresh run.
if [ "${1:-}" = --prepare ]; then
	root=$2 deb=$3
	fresh_mount "$root"
	own=$root/var/cache/apt/archives shared=$FRESH_CACHE/archives
	umount "$own"
	mkdir -p "$own/partial"
	for f in "$shared"/*.deb; do
		[ -e "$f" ] || continue
		ln "$f" "$own/" 2>/dev/null || cp "$f" "$own/"
	done
	chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
	    DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 /bin/sh -ec '
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends '"$CT_PKGS"' >/dev/null
		apt-get install -y -qq --download-only "$1" >/dev/null
	    ' sh "$deb"
	for f in "$own"/*.deb; do
		b=${f##*/}
		[ -e "$shared/$b" ] && continue
		cp "$f" "$shared/.$b.$$" && mv "$shared/.$b.$$" "$shared/$b"
	done
	exit 0
fi

# ---------------------------------------------------------------- --inside
# PID 1 of new mount and pid namespaces: boot, check, power off.
if [ "${1:-}" = --inside ]; then
	root=$2 logs=$3 debname=$4
	results=$logs/results
	passed=0 failed=0
	nspawn= ct=

	stop_container() {	# [GRACE-SECONDS]
		[ -n "$nspawn" ] || return 0
		if kill -0 "$nspawn" 2>/dev/null; then
			# SIGTERM: nspawn asks the container's systemd to power off.
			kill -TERM "$nspawn" 2>/dev/null || true
			local i
			for i in $(seq $(( ${1:-30} * 10 ))); do
				kill -0 "$nspawn" 2>/dev/null || break
				sleep 0.1
			done
			if kill -0 "$nspawn" 2>/dev/null; then
				echo "container did not power off in ${1:-30} s: killed" >>"$logs/checks.log"
				kill -KILL "$nspawn" 2>/dev/null || true
			fi
		fi
		wait "$nspawn" 2>/dev/null || true
		nspawn=
	}
	finish() {
		local rc=$?
		trap - EXIT INT TERM
		set +e
		# Interrupted: a short grace. Whatever is left dies with this
		# process, PID 1 of the namespace the container is in.
		stop_container $([ "$rc" = 130 ] && echo 5)
		echo "passed $passed" >>"$results"
		echo "failed $failed" >>"$results"
		exit $rc
	}
	trap finish EXIT
	trap 'echo "interrupted" >>"$logs/checks.log"; exit 130' INT TERM

	# Commands in the container: all its namespaces, a clean environment.
	# They are not in its units' cgroups; long-lived helpers are units
	# (systemd-run) or die with the container's pid namespace.
	in_ct() {
		nsenter -t "$ct" -a /usr/bin/env -i \
		    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		    LANG=C.UTF-8 TERM=dumb SYSTEMD_COLORS=0 SYSTEMD_PAGER=cat \
		    SYSTEMD_LESS= DEBIAN_FRONTEND=noninteractive "$@"
	}
	# wait_until SECONDS CMD...: poll CMD (every 0.1 s) until it succeeds.
	wait_until() {
		local deadline=$(( $(now_ms) + $1 * 1000 )); shift
		until "$@" >/dev/null 2>&1; do
			[ "$(now_ms)" -lt "$deadline" ] || return 1
			sleep 0.1
		done
	}
	show() { in_ct systemctl show -p "$2" --value "$1"; }
	is_state() { [ "$(show "$1" ActiveState)" = "$2" ]; }
	listening() {
		in_ct awk -v p=":$(printf %04X "$1")" \
		    '$4 == "0A" && substr($2, length($2) - 4) == p { f = 1 }
		     END { exit !f }' /proc/net/tcp /proc/net/tcp6
	}
	# The status line of a plain HTTP request through tlsfwd to the upstream.
	get() {
		local out
		out=$(in_ct timeout 15 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
		    printf "GET / HTTP/1.0\r\n\r\n" >&3; cat <&3' sh "$1") || true
		out=${out%%$'\n'*}
		printf '%s\n' "${out%$'\r'}"
	}
	not_listening() { ! listening "$1"; }
	get_ok() { [ "$(get "$1")" = "HTTP/1.0 200 ok" ]; }
	journal_has() { [ -n "$(in_ct journalctl --no-pager -q -o cat "$@")" ]; }
	journal_count() { in_ct journalctl --no-pager -q -o cat "$@" | wc -l; }
	# The sequence number of the first entry matching, from its cursor.
	journal_seq() {
		in_ct journalctl --no-pager -q -o export "$@" |
		    awk '/^__CURSOR=/ && !seen { sub(/.*;i=/, ""); sub(/;.*/, ""); print; seen = 1 }'
	}

	# check NAME: run check_NAME, print PASS/FAIL with its last words.
	note() { echo "$*" >>"$detail"; }
	check() {
		local name=$1 t0 rc
		detail=$logs/check-$name.log
		: >"$detail"
		t0=$(now_ms)
		# Not in an && list: there bash would ignore set -e in the check.
		# In the background: a signal's trap runs at once in `wait`.
		set +e
		( set -e; "check_${name//-/_}" ) >>"$detail" 2>&1 </dev/null &
		wait $!
		rc=$?
		set -e
		local why
		why=$(grep -v '^ ' "$detail" | tail -n 1)
		if [ "$rc" = 0 ]; then
			passed=$((passed + 1))
			printf 'PASS %-16s %s (%d ms)\n' "$name" "$why" $(( $(now_ms) - t0 ))
		else
			failed=$((failed + 1))
			printf 'FAIL %-16s %s (%d ms)\n' "$name" "$why" $(( $(now_ms) - t0 ))
			sed 's/^/    | /' "$detail" | tail -n 30
		fi
		printf '== %s: %s\n' "$name" "$([ $rc = 0 ] && echo PASS || echo FAIL)" >>"$logs/checks.log"
		cat "$detail" >>"$logs/checks.log"
	}
	fail() { note "$*"; return 1; }

	write_config() {	# [extra sections...] -> /etc/tlsfwd/tlsfwd.ini
		{
			cat <<-EOF
			; written by tests/fresh/check-systemd.sh
			[global]
			log_level = info
			shutdown_timeout = 30s

			[example]
			listen = 127.0.0.1:$P_EXAMPLE
			upstream = localhost:$P_UPSTREAM
			ca_file = /etc/tlsfwd/check/ca.pem

			[refused]
			listen = 127.0.0.1:$P_REFUSED
			upstream = localhost:$P_CLOSED
			ca_file = /etc/tlsfwd/check/ca.pem
			EOF
			printf '%s\n' "$@"
		} >"$root/etc/tlsfwd/tlsfwd.ini"
	}

	# ---- the checks
	check_install() {
		in_ct apt-get install -y /var/tmp/check/"$debname" >"$logs/apt-install.log" 2>&1 ||
		    fail "apt-get install ./$debname failed (see $logs/apt-install.log)"
		tail -n 3 "$logs/apt-install.log" | sed 's/^/  /'
		in_ct getent passwd tlsfwd || fail "no user tlsfwd"
		local en act
		en=$(in_ct systemctl is-enabled tlsfwd.service || true)
		act=$(in_ct systemctl is-active tlsfwd.service || true)
		note "  is-enabled=$en is-active=$act"
		[ "$en" = disabled ] && [ "$act" = inactive ] ||
		    fail "installed tlsfwd.service is $en/$act, expected disabled/inactive"
		note "apt-get install ./$debname: user tlsfwd, unit $en and $act, $(in_ct tlsfwd -V)"
	}

	check_start_ready() {
		write_config
		in_ct tlsfwd -t -c /etc/tlsfwd/tlsfwd.ini
		# As README.md says. Enabled, the unit stays loaded once stopped,
		# so that `systemctl show` still has its main process's exit.
		in_ct systemctl enable --now tlsfwd.service 2>&1 | sed 's/^/  /'
		[ "${PIPESTATUS[0]}" = 0 ] || fail "systemctl enable --now tlsfwd failed"
		# Right after start returns, with no waiting: a Type=simple-like
		# start would return before tlsfwd has bound anything (a race:
		# the journal order below is the check that cannot miss it).
		local bound=yes st sub inv rseq sseq t_exec t_active
		listening $P_EXAMPLE && listening $P_REFUSED || bound=no
		st=$(show tlsfwd ActiveState) sub=$(show tlsfwd SubState)
		[ "$st/$sub" = active/running ] || fail "state $st/$sub after start"
		inv=$(show tlsfwd InvocationID)
		rseq=$(journal_seq _SYSTEMD_INVOCATION_ID="$inv" TLSFWD_EVENT=ready)
		# systemd's "Started tlsfwd.service" (job done, unit started).
		sseq=$(journal_seq UNIT=tlsfwd.service INVOCATION_ID="$inv" \
		    MESSAGE_ID=39f53479d3a045ac8e11786248231fbf)
		note "  invocation $inv: journal seqnum of event=ready 0x${rseq:-none}, of \"Started\" 0x${sseq:-none}"
		[ -n "$rseq" ] || fail "no event=ready in the journal"
		[ -n "$sseq" ] || fail "no \"Started\" message in the journal"
		[ $((16#$rseq)) -lt $((16#$sseq)) ] ||
		    fail "systemd reported the unit started before tlsfwd's event=ready"
		t_exec=$(show tlsfwd ExecMainStartTimestampMonotonic)
		t_active=$(show tlsfwd ActiveEnterTimestampMonotonic)
		[ "$t_active" -gt "$t_exec" ] || fail "ActiveEnter $t_active <= ExecMainStart $t_exec"
		[ "$bound" = yes ] || fail "systemctl start returned before the listeners were bound"
		in_ct systemctl status tlsfwd --no-pager -n 0 | sed 's/^/  /'
		note "active (running) $(( (t_active - t_exec) / 1000 )) ms after exec, after event=ready (journal order), listeners bound when start returned"
	}

	check_limits() {
		local hard want got
		hard=$(in_ct awk '/^Max open files/ { print $5 }' /proc/1/limits)
		want=$NOFILE_UNIT
		[ "$hard" != unlimited ] && [ "$hard" -lt "$want" ] && want=$hard
		got=$(in_ct journalctl --no-pager -q -o cat \
		    _SYSTEMD_INVOCATION_ID="$(show tlsfwd InvocationID)" TLSFWD_EVENT=limits)
		note "  $got"
		note "  LimitNOFILE=$(show tlsfwd LimitNOFILE) LimitNOFILESoft=$(show tlsfwd LimitNOFILESoft)"
		case $got in *" nofile=$want "*) ;; *) fail "expected nofile=$want" ;; esac
		if [ "$want" -lt "$NOFILE_UNIT" ]; then
			note "nofile=$want: the unit's $NOFILE_UNIT capped by this machine's hard limit $hard (not checkable above it here)"
		else
			note "nofile=$want as LimitNOFILE= says"
		fi
	}

	check_request() {
		local inv n0 line
		inv=$(show tlsfwd InvocationID)
		n0=$(journal_count _SYSTEMD_INVOCATION_ID="$inv" TLSFWD_EVENT=handshake TLSFWD_RESULT=ok)
		line=$(get $P_EXAMPLE)
		[ "$line" = "HTTP/1.0 200 ok" ] || fail "answer through 127.0.0.1:$P_EXAMPLE: '$line'"
		wait_until 10 test_count_gt "$n0" _SYSTEMD_INVOCATION_ID="$inv" \
		    TLSFWD_EVENT=handshake TLSFWD_RESULT=ok TLSFWD_SERVICE=example ||
		    fail "no handshake result=ok line in the journal"
		in_ct journalctl --no-pager -q -o cat -n 1 -u tlsfwd TLSFWD_EVENT=handshake | sed 's/^/  /'
		note "'$line' through 127.0.0.1:$P_EXAMPLE; journal: TLSFWD_EVENT=handshake TLSFWD_RESULT=ok"
	}
	test_count_gt() { local n=$1; shift; [ "$(journal_count "$@")" -gt "$n" ]; }

	check_refused_journal() {
		listening $P_CLOSED && fail "port $P_CLOSED is not closed"
		in_ct timeout 15 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && cat <&3' sh $P_REFUSED || true
		wait_until 10 journal_has -u tlsfwd TLSFWD_RESULT=fail TLSFWD_SERVICE=refused ||
		    fail "journalctl -u tlsfwd TLSFWD_RESULT=fail: nothing for [refused]"
		local out
		out=$(in_ct journalctl --no-pager -q -o cat -u tlsfwd TLSFWD_RESULT=fail)
		note "  journalctl -u tlsfwd TLSFWD_RESULT=fail:"
		printf '%s\n' "$out" | sed 's/^/    /' >>"$detail"
		printf '%s\n' "$out" | grep -q 'service=refused .*stage=connect .*errno=ECONNREFUSED' ||
		    fail "the line lacks service=refused stage=connect errno=ECONNREFUSED"
		note "journalctl -u tlsfwd TLSFWD_RESULT=fail: service=refused stage=connect errno=ECONNREFUSED"
	}

	check_reload_good() {
		local pid
		pid=$(show tlsfwd MainPID)
		write_config "" "[added]" "listen = 127.0.0.1:$P_ADDED" \
		    "upstream = localhost:$P_UPSTREAM" "ca_file = /etc/tlsfwd/check/ca.pem"
		in_ct systemctl reload tlsfwd || fail "systemctl reload failed"
		wait_until 10 get_ok $P_ADDED || fail "no answer through the added 127.0.0.1:$P_ADDED"
		[ "$(show tlsfwd MainPID)" = "$pid" ] || fail "main PID changed"
		get_ok $P_EXAMPLE || fail "no answer through 127.0.0.1:$P_EXAMPLE"
		note "reload added [added] on :$P_ADDED, which answers; same main PID $pid"
	}

	check_reload_broken() {
		local pid status rc n0
		pid=$(show tlsfwd MainPID)
		n0=$(journal_count _PID="$pid" TLSFWD_EVENT=signal)
		write_config "" "[broken]" "listen = 127.0.0.1:8090" \
		    "upstream = localhost:$P_UPSTREAM" "bogus_key = 1"
		in_ct systemctl reload tlsfwd && rc=0 || rc=$?
		[ "$rc" != 0 ] || fail "systemctl reload of a broken file succeeded"
		status=$(in_ct systemctl status tlsfwd --no-pager -l -n 10 || true)
		printf '%s\n' "$status" | sed 's/^/  /' >>"$detail"
		printf '%s\n' "$status" | grep -q "tlsfwd.ini:[0-9]*: \[broken\]: unknown key 'bogus_key'" ||
		    fail "systemctl status does not show the error"
		[ "$(show tlsfwd ActiveState)/$(show tlsfwd SubState)" = active/running ] ||
		    fail "unit no longer active (running)"
		[ "$(show tlsfwd MainPID)" = "$pid" ] || fail "main PID changed"
		[ "$(journal_count _PID="$pid" TLSFWD_EVENT=signal)" = "$n0" ] ||
		    fail "tlsfwd was signalled"
		get_ok $P_ADDED || fail "the old configuration's [added] no longer answers"
		listening 8090 && fail "the broken file's listener was bound"
		note "reload exit $rc, 'unknown key' in systemctl status, still active (running), old config serves"
	}

	check_reload_bind() {
		local pid status rc n0
		pid=$(show tlsfwd MainPID)
		n0=$(journal_count _PID="$pid" TLSFWD_EVENT=reload TLSFWD_RESULT=fail)
		# Passes -t (which binds nothing); the port is the upstream's.
		write_config "" "[taken]" "listen = 127.0.0.1:$P_UPSTREAM" \
		    "upstream = localhost:$P_UPSTREAM" "ca_file = /etc/tlsfwd/check/ca.pem"
		in_ct tlsfwd -t -c /etc/tlsfwd/tlsfwd.ini
		in_ct systemctl reload tlsfwd && rc=0 || rc=$?
		note "  systemctl reload: exit $rc"
		wait_until 10 test_count_gt "$n0" _PID="$pid" TLSFWD_EVENT=reload TLSFWD_RESULT=fail ||
		    fail "no event=reload result=fail from tlsfwd (reload exit $rc)"
		wait_until 5 status_says "reload failed" || true
		status=$(in_ct systemctl status tlsfwd --no-pager -l -n 6 || true)
		printf '%s\n' "$status" | sed 's/^/  /' >>"$detail"
		printf '%s\n' "$status" | grep -q 'Status: "reload failed' ||
		    fail "systemctl status has no Status: \"reload failed ...\""
		printf '%s\n' "$status" | grep -q "cannot bind 127.0.0.1:$P_UPSTREAM" ||
		    fail "systemctl status does not show the bind error"
		[ "$(show tlsfwd ActiveState)/$(show tlsfwd SubState)" = active/running ] ||
		    fail "unit no longer active (running)"
		[ "$(show tlsfwd MainPID)" = "$pid" ] || fail "main PID changed"
		get_ok $P_ADDED || fail "the old configuration's [added] no longer answers"
		# Back to the base configuration for what follows.
		write_config
		in_ct systemctl reload tlsfwd || fail "reload of the base configuration failed"
		wait_until 10 not_listening $P_ADDED || fail "[added] still listens after the reload"
		note "SIGHUP sent, bind error logged, Status \"reload failed ...\", old config served"
	}
	status_says() { show tlsfwd StatusText | grep -q "$1"; }

	check_stop_drain() {
		local inv pid n0 held t0 out r code st
		write_config
		in_ct systemctl restart tlsfwd.service || fail "systemctl restart tlsfwd failed"
		inv=$(show tlsfwd InvocationID) pid=$(show tlsfwd MainPID)
		n0=$(journal_count _SYSTEMD_INVOCATION_ID="$inv" TLSFWD_EVENT=handshake TLSFWD_RESULT=ok)
		local go=$root/var/tmp/check/go
		rm -f "$go" "$root/var/tmp/check/held.out"
		mkfifo "$go"
		# A client that connects, then waits for "go" before its request
		# (the fifo opened read-write: the open does not wait for a writer).
		in_ct timeout 40 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
		    read -r -t 30 _ <>/var/tmp/check/go || exit 1
		    printf "GET / HTTP/1.0\r\n\r\n" >&3
		    cat <&3 >/var/tmp/check/held.out' sh $P_EXAMPLE &
		held=$!
		# Whatever happens, the client does not wait any longer.
		trap "! kill -0 $held 2>/dev/null ||
		    timeout 2 sh -c 'echo go >\"\$1\"' sh $(printf %q "$go") 2>/dev/null || true" EXIT
		wait_until 10 test_count_gt "$n0" _SYSTEMD_INVOCATION_ID="$inv" \
		    TLSFWD_EVENT=handshake TLSFWD_RESULT=ok ||
		    fail "the held connection got no upstream handshake"
		t0=$(now_ms)
		in_ct systemctl stop --no-block tlsfwd.service
		wait_until 10 is_state tlsfwd deactivating ||
		    fail "not deactivating after stop: $(show tlsfwd ActiveState)/$(show tlsfwd SubState)/$(show tlsfwd Result)"
		wait_until 10 not_listening $P_EXAMPLE ||
		    fail "still listening on :$P_EXAMPLE while draining"
		st=$(show tlsfwd ActiveState)/$(show tlsfwd SubState)
		[ "$st" = deactivating/stop-sigterm ] || fail "state $st while a connection is open"
		note "  listener closed, $st with the connection open"
		timeout 10 sh -c 'echo go >"$1"' sh "$go" ||
		    fail "the held client did not wait for go"
		wait "$held" || fail "the held client failed (exit $?)"
		out=$(head -n 1 "$root/var/tmp/check/held.out" | tr -d '\r')
		[ "$out" = "HTTP/1.0 200 ok" ] || fail "held connection got '$out'"
		wait_until 30 is_state tlsfwd inactive || fail "not inactive 30 s after the connection ended"
		r=$(show tlsfwd Result) code=$(show tlsfwd ExecMainCode) st=$(show tlsfwd ExecMainStatus)
		note "  Result=$r ExecMainCode=$code ExecMainStatus=$st (stopped in $(( $(now_ms) - t0 )) ms)"
		in_ct journalctl --no-pager -q -o cat _PID="$pid" -n 4 | sed 's/^/  /' >>"$detail"
		[ "$r" = success ] && [ "$code" = 1 ] && [ "$st" = 0 ] ||
		    fail "tlsfwd did not exit 0 (Result=$r ExecMainCode=$code ExecMainStatus=$st)"
		journal_has _PID="$pid" TLSFWD_EVENT=close TLSFWD_REASON=done TLSFWD_SERVICE=example ||
		    fail "no event=close reason=done for the held connection"
		# systemd's "Deactivated successfully" (unit succeeded).
		journal_has UNIT=tlsfwd.service INVOCATION_ID="$inv" \
		    MESSAGE_ID=7ad2d189f7e94e70a38c781354912448 ||
		    fail "no \"Deactivated successfully\" in the journal"
		note "listener closed at once, held request answered '$out', exit 0 (Result=success) $(( $(now_ms) - t0 )) ms after stop"
	}

	check_socket() {
		local inv line
		write_config
		in_ct systemctl stop tlsfwd.service
		in_ct systemctl reset-failed tlsfwd.service 2>/dev/null || true
		is_state tlsfwd inactive || fail "tlsfwd.service is not inactive before"
		in_ct systemctl enable --now tlsfwd.socket 2>&1 | sed 's/^/  /'
		[ "$(in_ct systemctl is-active tlsfwd.socket)" = active ] || fail "tlsfwd.socket not active"
		listening $P_EXAMPLE || fail "nothing listens on :$P_EXAMPLE"
		is_state tlsfwd inactive || fail "tlsfwd.service started before any connection"
		line=$(get $P_EXAMPLE)
		[ "$line" = "HTTP/1.0 200 ok" ] ||
		    fail "first connection got '$line' (tlsfwd.service $(show tlsfwd ActiveState)/$(show tlsfwd Result))"
		wait_until 10 is_state tlsfwd active || fail "tlsfwd.service not active after the connection"
		inv=$(show tlsfwd InvocationID)
		wait_until 5 journal_has _SYSTEMD_INVOCATION_ID="$inv" TLSFWD_EVENT=listening \
		    TLSFWD_SERVICE=example TLSFWD_INHERITED=yes ||
		    fail "tlsfwd did not use the passed socket (no inherited=yes)"
		in_ct journalctl --no-pager -q -o cat _SYSTEMD_INVOCATION_ID="$inv" TLSFWD_EVENT=listening | sed 's/^/  /'
		# Stopped, the socket stays; the next client starts it again.
		in_ct systemctl stop tlsfwd.service 2>&1 | sed 's/^/  /'
		listening $P_EXAMPLE || fail "the socket closed with the service"
		line=$(get $P_EXAMPLE)
		[ "$line" = "HTTP/1.0 200 ok" ] || fail "connection after stop got '$line'"
		wait_until 10 is_state tlsfwd active || fail "not started again"
		[ "$(show tlsfwd InvocationID)" != "$inv" ] || fail "same invocation after stop"
		in_ct systemctl disable --now tlsfwd.socket 2>&1 | sed 's/^/  /'
		in_ct systemctl stop tlsfwd.service
		note "first connection started tlsfwd.service with the socket (inherited=yes), again after a stop"
	}

	check_security() {
		local out level
		out=$(in_ct systemd-analyze security tlsfwd.service --no-pager)
		printf '%s\n' "$out" | grep -E '^✗' | sed 's/^/  /' >>"$detail" || true
		level=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for tlsfwd.service: \([0-9.]*\).*/\1/p')
		[ -n "$level" ] || fail "no 'Overall exposure level' line"
		awk -v l="$level" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(l <= m) }' ||
		    fail "exposure $level > $MAX_EXPOSURE"
		note "$(printf '%s\n' "$out" | grep 'Overall exposure level' | sed 's/^[^O]*//')"
	}

	# ---- boot
	mkdir -p /run/systemd/nspawn
	mount -t tmpfs -o mode=0755 tmpfs /run/systemd/nspawn
	t0=$(now_ms)
	SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 systemd-nspawn --boot --register=no \
	    --keep-unit --private-network --console=read-only \
	    --machine="tlsfwd-check-$$" -D "$root" \
	    </dev/null >"$logs/console.log" 2>&1 &
	nspawn=$!
	# The container's PID 1: nspawn's child once it runs systemd.
	find_ct() {
		local s p
		for s in /proc/[0-9]*/stat; do
			p=${s#/proc/}; p=${p%/stat}
			read -r _ _ _ ppid _ <"$s" 2>/dev/null || continue
			[ "$ppid" = "$nspawn" ] || continue
			case $(readlink "/proc/$p/exe" 2>/dev/null) in
			*/systemd) ct=$p; return 0 ;;
			esac
		done
		return 1
	}
	booted() { [ -S "/proc/$ct/root/run/systemd/private" ]; }
	if ! wait_until 30 find_ct || ! wait_until 60 booted; then
		tail -n 20 "$logs/console.log" | sed 's/^/    | /'
		echo "FAIL boot             systemd-nspawn --boot: no running systemd after 60 s (console above)"
		failed=$((failed + 1))
		exit 1
	fi
	state=$(timeout 60 nsenter -t "$ct" -a systemctl is-system-running --wait 2>&1 || true)
	boot_ms=$(( $(now_ms) - t0 ))
	echo "check-systemd: container booted in $boot_ms ms: is-system-running: $state"
	echo "boot $boot_ms" >>"$results"
	if [ "$state" != running ]; then
		in_ct systemctl --failed --no-pager --no-legend | sed 's/^/  failed unit: /'
	fi

	# The upstream, as a unit of the container.
	in_ct systemd-run --quiet --unit=check-upstream -p Type=exec \
	    openssl s_server -quiet -www -accept $P_UPSTREAM \
	    -cert /etc/tlsfwd/check/server.pem -key /etc/tlsfwd/check/server.key
	wait_until 10 listening $P_UPSTREAM || echo "warning: the upstream does not listen on :$P_UPSTREAM"

	check install
	if [ "$passed" = 1 ]; then
		check start-ready
		check limits
		check request
		check refused-journal
		check reload-good
		check reload-broken
		check reload-bind
		check stop-drain
		check socket
		check security
	fi
	in_ct journalctl --no-pager -q -b -o short-monotonic >"$logs/journal.log" 2>&1 || true
	exit 0
fi

# ---------------------------------------------------------------- outer
[ "$(id -u)" = 0 ] || fresh_die "needs root (debootstrap, mounts, systemd-nspawn)"
# This machine's tools, installed when missing (as rootfs.sh does debootstrap).
missing=
for t in systemd-nspawn:systemd-container nsenter:util-linux openssl:openssl \
    certtool:gnutls-bin "${PYTHON:-/usr/bin/python3}":python3; do
	command -v "${t%%:*}" >/dev/null || missing="$missing ${t##*:}"
done
if [ -n "$missing" ]; then
	fresh_log "installing$missing"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends $missing >&2 ||
	    fresh_die "cannot install$missing"
fi
T0=$(now_ms)

deb=${1:-}
if [ -z "$deb" ]; then
	deb=$(ls -t "$repo"/tlsfwd_*.deb 2>/dev/null | head -n 1 || true)
	[ -n "$deb" ] || fresh_die "no $repo/tlsfwd_*.deb: run \`make deb\` (or \`make check-systemd\`)"
fi
[ -f "$deb" ] || fresh_die "$deb: no such file"
deb=$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")

logs=${CHECK_SYSTEMD_LOGS:-$repo/build/systemd}
mkdir -p "$logs"
rm -f "$logs"/*.log "$logs/results"
work=$(mktemp -d /var/tmp/tlsfwd-systemd.XXXXXX)
root=$work/root
cg_dirs=() cg_home=() inner= phase=prepare

cleanup() {
	local rc=$? d i
	trap - EXIT INT TERM
	set +e
	if [ -n "$inner" ] && kill -0 "$inner" 2>/dev/null; then
		# The namespaces' PID 1 (unshare's child) powers the container
		# off and exits; killed, it takes every process of them along.
		local ns1
		ns1=$(cat "/proc/$inner/task/$inner/children" 2>/dev/null || true)
		[ "$phase" = prepare ] && ns1_grace=0 || ns1_grace=150
		for i in $ns1; do kill -TERM "$i" 2>/dev/null || true; done
		for i in $(seq $ns1_grace); do kill -0 "$inner" 2>/dev/null || break; sleep 0.1; done
		for i in $ns1; do kill -KILL "$i" 2>/dev/null || true; done
		kill -KILL "$inner" 2>/dev/null || true
		wait "$inner" 2>/dev/null || true
	fi
	# The cgroups nspawn made below ours (only when we made ours).
	for i in "${!cg_dirs[@]}"; do
		echo $$ >"${cg_home[$i]}/cgroup.procs" 2>/dev/null || true
		find "${cg_dirs[$i]}" -depth -type d -exec rmdir {} + 2>/dev/null || true
		[ -d "${cg_dirs[$i]}" ] && fresh_log "warning: could not remove ${cg_dirs[$i]}"
	done
	if [ "${CHECK_SYSTEMD_KEEP:-0}" = 1 ]; then fresh_log "root kept: $root"
	else rm -rf --one-file-system "$work"; fi
	# The summary line, last.
	local p f boot
	p=$(sed -n 's/^passed //p' "$logs/results" 2>/dev/null | tail -n 1 || true)
	f=$(sed -n 's/^failed //p' "$logs/results" 2>/dev/null | tail -n 1 || true)
	boot=$(sed -n 's/^boot //p' "$logs/results" 2>/dev/null | tail -n 1 || true)
	[ -n "$p" ] || p=0
	[ -n "$f" ] || f=0
	if [ "$rc" = 130 ] || [ "$rc" = 143 ]; then
		f=$((f + 1)); echo "FAIL interrupted"
	elif [ -z "$(sed -n 's/^failed //p' "$logs/results" 2>/dev/null || true)" ]; then
		f=$((f + 1)); echo "FAIL setup            did not get to the checks (see above, $logs)"
	elif [ "$rc" != 0 ] && [ "$f" = 0 ]; then
		f=1; echo "FAIL setup            exit $rc"
	fi
	echo "check-systemd: run took $(( ($(now_ms) - T0) / 1000 )) s (prepare ${prep_s:-?} s, boot ${boot:-?} ms); details in $logs"
	echo "check-systemd: $p passed, $f failed"
	[ "$f" = 0 ] && [ "$rc" = 0 ] && exit 0
	exit 1
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The root: the pristine base, then systemd and the package's dependencies.
t=$(now_ms)
fresh_unpack "$root"
mkdir -p "$root/var/tmp/check" "$root/etc/tlsfwd/check"
cp "$deb" "$root/var/tmp/check/"
fresh_log "root $root: installing $CT_PKGS"
unshare --mount --pid --fork --kill-child --mount-proc --propagation private \
    "$0" --prepare "$root" "/var/tmp/check/$(basename "$deb")" >"$logs/prepare.log" 2>&1 &
inner=$!
wait "$inner" && rc=0 || rc=$?
inner=
[ "$rc" = 0 ] || { tail -n 20 "$logs/prepare.log" >&2; fresh_die "preparing the root failed"; }
# A throw-away PKI, made here (python3, openssl and certtool: `make deps`).
"${PYTHON:-/usr/bin/python3}" "$repo/tests/pki.py" "$work/pki" >"$logs/pki.log" 2>&1 ||
    { cat "$logs/pki.log" >&2; fresh_die "tests/pki.py failed"; }
install -m 644 "$work/pki/ca.pem" "$work/pki/server.pem" "$root/etc/tlsfwd/check/"
install -m 600 "$work/pki/server.key" "$root/etc/tlsfwd/check/"
prep_s=$(( ($(now_ms) - t) / 1000 ))

# cgroups: where systemd runs (a real machine) a delegated scope holds
# nspawn; here (no systemd as PID 1) a cgroup of our own in each hierarchy,
# under which nspawn makes its payload/supervisor groups, removed afterwards.
# mount_of FSTYPE SUPEROPTS-REGEX: the first such mount point.
mount_of() {
	awk -v t="$1" -v o="$2" '{
		for (i = 7; $i != "-"; i++) ;
		if ($(i + 1) == t && $(i + 3) ~ o) { print $5; exit }
	}' /proc/self/mountinfo
}
wrap=()
if [ -d /run/systemd/system ]; then
	wrap=(systemd-run --quiet --scope --collect -p Delegate=yes
	    --unit="tlsfwd-check-systemd-$$" --)
else
	# Read at once: read line by line, gVisor's /proc/self/cgroup moves
	# under the loop as it moves this shell.
	cgroups=$(cat /proc/self/cgroup)
	while IFS=: read -r _ ctrl path; do
		case $ctrl in
		"") mnt=$(mount_of cgroup2 '') ;;
		name=systemd) mnt=$(mount_of cgroup '(^|,)name=systemd(,|$)') ;;
		*) continue ;;
		esac
		[ -n "$mnt" ] || continue
		home=$mnt${path%/}
		d=$home/tlsfwd-check-systemd-$$
		mkdir "$d" && echo $$ >"$d/cgroup.procs" ||
		    fresh_die "cannot make the cgroup $d"
		cg_dirs+=("$d") cg_home+=("$home")
	done <<<"$cgroups"
fi

fresh_log "booting it with systemd-nspawn"
phase=boot
"${wrap[@]}" unshare --mount --pid --fork --kill-child --mount-proc --propagation private \
    "$0" --inside "$root" "$logs" "$(basename "$deb")" &
inner=$!
wait "$inner" && rc=0 || rc=$?
inner=
exit $rc
