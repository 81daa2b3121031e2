# bench/lib.sh - what bench/load.sh, bench/hostile.sh and bench/bigmsg.sh share:
# the -h help, die, checks of tools and numeric knobs, the scratch directories,
# building the sink, and starting, waiting for and stopping processes by PID.
#
# It is sourced, not run: a script sets BENCH to its own folder (bench/), then
#   . "$BENCH/lib.sh" || exit 1
# It sets ROOT (the repository), GO (${GO:-go}) and exports GOWORK=off. Its
# functions use the caller's globals BIN (scratch folder for binaries), SRV_PID
# (the server running now) and GO. It works under set -e as well as without.

export GOWORK=off # each module on its own go.mod, as make test does (go.work is for readers)
GO=${GO:-go}
ROOT=$(cd "$BENCH/.." && pwd)

# die MESSAGE: "SCRIPT: MESSAGE" on stderr, exit 1.
die() {
	echo "${0##*/}: $*" >&2
	exit 1
}

# help_if_asked "$@": for -h or --help, prints the script's header comment (line 2
# up to the line before "set -u") without its "# " and exits 0.
help_if_asked() {
	case "${1:-}" in
	-h | --help)
		sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'
		exit 0
		;;
	esac
}

# need_cmd CMD [HINT]: dies with "CMD not found[: HINT]" unless CMD is on PATH.
need_cmd() {
	command -v "$1" >/dev/null || die "$1 not found${2:+: $2}"
}

# need_numbers VAR...: dies unless each named variable is digits only.
need_numbers() {
	local v
	for v; do
		[[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a number, not '${!v}'"
	done
}

# make_dirs NAME: OUT (kept; ${OUT:-a new /tmp/smtpd-NAME.*}), BIN (a new
# /tmp/smtpd-NAME-bin.*, for the cleanup to remove) and an empty RAW=$OUT/raw.txt.
make_dirs() {
	OUT=${OUT:-$(mktemp -d "/tmp/smtpd-$1.XXXXXX")}
	mkdir -p "$OUT" || die "cannot create $OUT"
	BIN=$(mktemp -d "/tmp/smtpd-$1-bin.XXXXXX")
	RAW=$OUT/raw.txt
	: >"$RAW"
}

# build_sink [SINK_BIN]: $BIN/sink, a copy of SINK_BIN if given, else built from
# ./examples/sink.
build_sink() {
	local sink=${1:-}
	if [ -n "$sink" ]; then
		[ -x "$sink" ] || die "SINK_BIN=$sink is not an executable"
		cp "$sink" "$BIN/sink" || die "cannot copy $sink"
	else
		(cd "$ROOT" && "$GO" build -o "$BIN/sink" ./examples/sink) || die "go build ./examples/sink failed"
	fi
}

# build_sink_rev REV OUT: examples/sink as it was at git revision REV, built into
# OUT from a copy of that revision's tree (the work tree is not touched).
build_sink_rev() {
	local rev=$1 out=$2 src
	src=$(mktemp -d "$BIN/rev.XXXXXX") || die "mktemp failed"
	git -C "$ROOT" archive "$rev" | tar -x -C "$src" || die "git archive $rev failed"
	(cd "$src" && GOWORK=off "$GO" build -o "$out" ./examples/sink) || die "go build of examples/sink at $rev failed"
	rm -rf "$src"
}

# build_tool NAME: $BIN/NAME from bench/tools/NAME.
build_tool() {
	(cd "$BENCH/tools" && "$GO" build -o "$BIN/$1" "./$1") || die "go build of bench/tools/$1 failed"
}

# stop_pid PID: TERM, up to 5 s, then KILL; reaps it. Nothing for an empty PID.
stop_pid() {
	local p=$1 i
	[ -n "$p" ] || return 0
	if kill -0 "$p" 2>/dev/null; then
		kill -TERM "$p" 2>/dev/null || true
		for i in $(seq 1 50); do
			kill -0 "$p" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$p" 2>/dev/null; then kill -KILL "$p" 2>/dev/null || true; fi
	fi
	wait "$p" 2>/dev/null || true
	return 0
}

# stop_server: stops SRV_PID and clears it.
stop_server() {
	stop_pid "$SRV_PID"
	SRV_PID=""
}

# listening PORT: whether something listens on TCP PORT (needs ss).
listening() { [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }

# start_listening PORT LOG CMD...: starts CMD in the background (stdin /dev/null,
# stdout and stderr appended to LOG), sets SRV_PID, and waits up to 10 s for PORT
# to listen; false if it did not or CMD ended first.
start_listening() {
	local port=$1 log=$2 i
	shift 2
	"$@" >>"$log" 2>&1 </dev/null &
	SRV_PID=$!
	for i in $(seq 1 100); do
		kill -0 "$SRV_PID" 2>/dev/null || return 1
		listening "$port" && return 0
		sleep 0.1
	done
	return 1
}

# await_line PID FILE REGEX: waits up to 10 s, while PID runs, for a line of FILE
# to match REGEX (grep); false if none did.
await_line() {
	local p=$1 file=$2 re=$3 i
	for i in $(seq 1 100); do
		grep -q -- "$re" "$file" 2>/dev/null && return 0
		kill -0 "$p" 2>/dev/null || break
		sleep 0.1
	done
	grep -q -- "$re" "$file" 2>/dev/null
}
