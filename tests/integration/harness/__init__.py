"""Helpers for the tlsfwd integration tests, one module per concern:

wrapper     TLSFWD_WRAPPER (make valgrind), TLSFWD_SLOW and SOCK_TIMEOUT
logfmt      parsing log lines (logfmt, JSON) and num()
config      INI text: render_ini() and the line numbers of keys and sections
daemon      Tlsfwd (a running daemon and its log), run_tlsfwd(), check_config()
clients     plain TCP clients and whole exchanges through tlsfwd
upstreams   TLS and raw upstream servers, `openssl s_server`, handlers
data        deterministic data streams, wait_stalled()
tlsinfo     certificate pins and dates, the ClientHello tlsfwd sends
systemd     sd_notify and journal sockets, socket activation, watchdog
procfs      /proc: status, RSS, listening sockets
namespaces  network namespace with a black hole, private /etc/hosts
dns         a DNS server the test controls (records, TTLs, outages)

Tests import the names they use: `from harness.clients import connect`.
"""
