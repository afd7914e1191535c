# tests/fresh/rootfs.sh - a pristine minimal Debian bookworm root, for the
# checks that must start from a machine with nothing of tlsfwd's installed
# (check-fresh.sh, check-systemd.sh). Sourced, not run.
#
#   fresh_base_tar      prints the path of the cached pristine base: a tarball
#                       of `debootstrap --variant=minbase` plus git, make and
#                       netbase (what a minimal server has, plus the two tools
#                       the README assumes), built on first use
#   fresh_unpack DIR    a pristine copy of it in DIR (empty or absent)
#   fresh_mount DIR     /proc, /sys, /dev, /dev/pts, /dev/shm and /run in the
#                       root DIR as the tests need them; call it inside a
#                       private mount and pid namespace (fresh_enter), so that
#                       every mount and process ends with it
#   fresh_enter CMD...  runs CMD in new mount and pid namespaces
#
# The archive is the one this machine's apt already uses: the sources are
# read from /etc/apt/sources.list.d/ (and /etc/apt/sources.list) at run time
# and copied into the root, so no mirror is named here. The cache key is the
# suite and those sources; FRESH_CACHE (default /var/cache/tlsfwd-fresh)
# holds the base and a download cache of .deb files shared by the roots
# (installing from it is as fresh as from the mirror; it only saves time).

FRESH_SUITE=${FRESH_SUITE:-bookworm}
FRESH_CACHE=${FRESH_CACHE:-/var/cache/tlsfwd-fresh}
FRESH_INCLUDE=git,make,netbase

fresh_log() { printf '%s: %s\n' "${FRESH_NAME:-fresh}" "$*" >&2; }
fresh_die() { fresh_log "error: $*"; exit 1; }

# The enabled apt source files, in apt's order: only *.sources and *.list.
fresh_source_files() {
	local f
	[ -s /etc/apt/sources.list ] && echo /etc/apt/sources.list
	for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] && echo "$f"
	done
	return 0
}

# The URI of the main Debian archive (not -security, not -updates' own) that
# serves $FRESH_SUITE, from either format of apt source file.
fresh_mirror() {
	local f
	fresh_source_files | while read -r f; do
		case $f in
		*.sources)
			# deb822: stanzas separated by blank lines.
			awk -v suite="$FRESH_SUITE" '
			    function flush() {
				if (types ~ /(^| )deb( |$)/ && suites ~ "(^| )" suite "( |$)")
					for (i = 1; i <= nu; i++) print u[i]
				types = suites = ""; nu = 0
			    }
			    /^[ \t]*$/ { flush(); next }
			    /^[ \t]*#/ { next }
			    tolower($1) == "types:" { $1 = ""; types = $0 }
			    tolower($1) == "suites:" { $1 = ""; suites = $0 }
			    tolower($1) == "uris:" { for (i = 2; i <= NF; i++) u[++nu] = $i }
			    END { flush() }' "$f" ;;
		*)
			awk -v suite="$FRESH_SUITE" '
			    $1 == "deb" {
				i = 2; if ($i ~ /^\[/) while ($i !~ /\]$/) i++
				if ($i ~ /^\[/ || $i ~ /\]$/) i++
				if ($(i + 1) == suite) print $i
			    }' "$f" ;;
		esac
	done | grep -v -- '-security' | head -n 1
}

fresh_key() {
	{ echo "$FRESH_SUITE $FRESH_INCLUDE"; fresh_source_files | xargs cat; } |
	    sha256sum | cut -c1-12
}

fresh_base_tar() {
	local key tar tmp mirror
	key=$(fresh_key)
	tar=$FRESH_CACHE/$FRESH_SUITE-minbase-$key.tar
	if [ -s "$tar" ]; then echo "$tar"; return 0; fi
	mirror=$(fresh_mirror)
	[ -n "$mirror" ] || fresh_die "no apt source for $FRESH_SUITE in /etc/apt/sources.list{,.d/}"
	if ! command -v debootstrap >/dev/null; then
		fresh_log "installing debootstrap"
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		    apt-get install -y -qq --no-install-recommends debootstrap >&2 ||
		    fresh_die "cannot install debootstrap"
	fi
	mkdir -p "$FRESH_CACHE"
	tmp=$(mktemp -d "$FRESH_CACHE/base.XXXXXX")
	fresh_log "debootstrap --variant=minbase $FRESH_SUITE (once; cached as $tar)"
	if ! debootstrap --variant=minbase --include="$FRESH_INCLUDE" \
	    "$FRESH_SUITE" "$tmp/root" "$mirror" >"$tmp/debootstrap.log" 2>&1; then
		tail -n 20 "$tmp/debootstrap.log" >&2
		rm -rf "$tmp"
		fresh_die "debootstrap failed (log above)"
	fi
	# The machine's own apt sources replace debootstrap's one-line list, so
	# the root gets updates and security fixes as an installed server would.
	rm -f "$tmp/root/etc/apt/sources.list"
	fresh_source_files | while read -r f; do
		case $f in
		/etc/apt/sources.list) cp "$f" "$tmp/root/etc/apt/sources.list" ;;
		*) cp "$f" "$tmp/root/etc/apt/sources.list.d/" ;;
		esac
	done
	rm -rf "$tmp/root/var/cache/apt/archives"/*.deb "$tmp/root/var/lib/apt/lists"/*_Packages
	tar -C "$tmp/root" --numeric-owner -cf "$tmp/base.tar" . ||
	    { rm -rf "$tmp"; fresh_die "cannot write the base tarball"; }
	mv "$tmp/base.tar" "$tar"
	rm -rf "$tmp"
	echo "$tar"
}

fresh_unpack() {
	local dir=$1 tar
	tar=$(fresh_base_tar) || return 1
	mkdir -p "$dir"
	tar -C "$dir" --numeric-owner -xpf "$tar" || fresh_die "cannot unpack $tar"
	# apt's downloads are shared between roots (see the top of this file).
	mkdir -p "$FRESH_CACHE/archives/partial"
}

fresh_mount() {
	local r=$1
	# The root is a mount point of its own, as / is on a machine: without it
	# `unshare --propagation` and `ip netns` (mount --make-rslave /) fail.
	mount --bind "$r" "$r"
	mount -t proc proc "$r/proc"
	mount -t sysfs sysfs "$r/sys" 2>/dev/null || mount --rbind /sys "$r/sys"
	mount --rbind /dev "$r/dev"
	mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$r/dev/pts" 2>/dev/null || true
	mount -t tmpfs -o mode=1777 tmpfs "$r/dev/shm"
	mount -t tmpfs -o mode=0755 tmpfs "$r/run"
	mount --bind "$FRESH_CACHE/archives" "$r/var/cache/apt/archives"
}

fresh_enter() {
	unshare --mount --pid --fork --propagation private "$@"
}
