#!/usr/bin/env bash
# tests/fresh/check-fresh.sh - `make check-fresh`: the README's two commands,
# run first on a machine with nothing of tlsfwd's installed.
#
# A pristine minimal Debian bookworm root (rootfs.sh: debootstrap minbase plus
# git and make, with Debian's own /etc/hosts, where localhost is ::1 and
# 127.0.0.1), a clean clone of HEAD in it, then exactly `make demo` and
# `CI=true make check` as root inside it (chroot in new mount and pid
# namespaces: every mount and process ends with the run, also on failure).
# Prints one summary line with each command's result and time; exits 0 only
# if both passed. Output of each command: $FRESH_LOGS/{demo,check}.log.
#
#   FRESH_KEEP=1   keep the root afterwards (its path is printed)
set -euo pipefail

FRESH_NAME=check-fresh
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
. "$here/rootfs.sh"

[ "$(id -u)" = 0 ] || fresh_die "needs root (debootstrap, chroot, mounts)"

# Inside the namespaces: mount, then run both commands with a clean
# environment, as a root login on a fresh server would.
if [ "${1:-}" = --inside ]; then
	root=$2 logs=$3
	fresh_mount "$root"
	run() {
		local name=$1 t0 rc; shift
		t0=$(date +%s)
		chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
		    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		    /bin/sh -c 'cd /root/tlsfwd && exec "$@"' sh "$@" \
		    </dev/null >"$logs/$name.log" 2>&1 && rc=0 || rc=$?
		echo "$name $rc $(( $(date +%s) - t0 ))" >>"$logs/results"
		return 0
	}
	run demo make demo
	run check env CI=true make check
	exit 0
fi

head=$(git -C "$repo" rev-parse --short HEAD)
work=$(mktemp -d /var/tmp/tlsfwd-fresh.XXXXXX)
logs=${FRESH_LOGS:-$repo/build/fresh}
mkdir -p "$logs" && rm -f "$logs"/{demo,check}.log "$logs/results"
cleanup() {
	local rc=$?
	# The namespaces are gone with fresh_enter's process; nothing is
	# mounted outside them. Kill it if we were interrupted.
	[ -n "${inner:-}" ] && kill -KILL "$inner" 2>/dev/null || true
	wait 2>/dev/null || true
	if [ "${FRESH_KEEP:-0}" = 1 ]; then fresh_log "root kept: $work/root"
	else rm -rf --one-file-system "$work"; fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fresh_unpack "$work/root"
git clone -q --no-local "$repo" "$work/root/root/tlsfwd"
git -C "$work/root/root/tlsfwd" checkout -q --detach "$head"
fresh_log "HEAD $head in $work/root; logs in $logs"

fresh_enter "$0" --inside "$work/root" "$logs" &
inner=$!
wait "$inner"
inner=

summary="check-fresh: HEAD $head"
ok=1
for name in demo check; do
	line=$(grep "^$name " "$logs/results" 2>/dev/null || echo "$name 255 0")
	set -- $line
	if [ "$2" = 0 ]; then res=ok; else res="FAILED (exit $2)"; ok=0; fi
	case $name in demo) cmd="make demo" ;; check) cmd="CI=true make check" ;; esac
	summary="$summary; $cmd: $res in $3 s"
	if [ "$2" != 0 ]; then
		echo "---- last lines of $logs/$name.log" >&2
		tail -n 40 "$logs/$name.log" >&2 || true
	fi
done
# The tests' own closing lines, for the record.
grep -E '^[0-9]+ (passed|failed)|[0-9]+ passed' "$logs/check.log" 2>/dev/null |
    sed 's/^/  /' || true
echo "$summary"
[ "$ok" = 1 ]
