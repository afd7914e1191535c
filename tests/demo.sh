#!/usr/bin/env bash
# tests/demo.sh BIN - shows tlsfwd carrying a real HTTP request to a local
# TLS server (openssl s_server) with a CA made on the spot, and the log lines.
set -euo pipefail

bin=$(realpath "${1:-build/tlsfwd}")
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d /tmp/tlsfwd-demo.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. A throw-away CA and a certificate for localhost (tests/pki.py)"
/usr/bin/python3 "$here/pki.py" "$dir" >/dev/null
(cd "$dir" && ls ca.pem server.pem server.key)

step "2. A local TLS server: openssl s_server -www on an ephemeral port"
# s_server prints "ACCEPT <addr>:<port>" once it listens.
exec 3< <(exec openssl s_server -accept 0 -cert "$dir/server.pem" \
    -key "$dir/server.key" -www 2>/dev/null)
pids+=($!)
port=
while read -r -t 10 line <&3; do
	case $line in ACCEPT*) port=${line##*:}; break ;; esac
done
[ -n "$port" ] || { echo "demo: s_server did not start" >&2; exit 1; }
echo "TLS server on localhost:$port"

step "3. tlsfwd: plaintext 127.0.0.1:<port> -> verified TLS to localhost:$port"
cat >"$dir/tlsfwd.ini" <<INI
[global]
log_level = info

[demo]
listen = 127.0.0.1:0
upstream = localhost:$port
ca_file = $dir/ca.pem
INI
cat "$dir/tlsfwd.ini"
"$bin" -t -c "$dir/tlsfwd.ini"
"$bin" -c "$dir/tlsfwd.ini" 2>"$dir/tlsfwd.log" &
pids+=($!)
# tlsfwd logs event=ready once every listener is bound.
# (tail is ended by SIGPIPE once grep has seen the line.)
{ timeout 10 tail -n +1 -f "$dir/tlsfwd.log" || true; } |
    grep -q -m1 'event=ready' || { cat "$dir/tlsfwd.log" >&2; exit 1; }
listen=$(grep -o 'event=listening service=demo listen=[^ ]*' "$dir/tlsfwd.log")
listen=${listen##*listen=}
echo "tlsfwd listening on $listen"

step "4. A plain HTTP client talks to tlsfwd: curl http://$listen/"
curl -sS -m 10 -o "$dir/response" "http://$listen/"
head -n 8 "$dir/response"

step "5. The handshake and close lines tlsfwd logged"
kill "${pids[1]}"; wait "${pids[1]}" 2>/dev/null || true
grep -E 'event=(handshake|close)' "$dir/tlsfwd.log"
grep -q 'event=handshake .*result=ok' "$dir/tlsfwd.log"
printf '\ndemo: OK\n'
