#!/usr/bin/env bash
# bench/bigmsg.sh - one large message through examples/sink on loopback, timed, with
# the sink's peak RSS: streamed (-stream, default 1 GiB) and buffered (default
# 256 MiB, with and without MAIL FROM SIZE=). `make load-big` runs it.
#
# Knobs: STREAM_SIZE=1073741824 BUFFERED_SIZE=268435456 PORT=12547
set -euo pipefail
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$BENCH/lib.sh" || exit 1 # stop_pid, await_line, build_sink, build_tool (sets GO, ROOT)
cd "$ROOT"
STREAM_SIZE=${STREAM_SIZE:-1073741824}
BUFFERED_SIZE=${BUFFERED_SIZE:-268435456}
PORT=${PORT:-12547}
BIN=$(mktemp -d)
SINK_PID=""
cleanup() {
	stop_pid "$SINK_PID"
	rm -rf "$BIN"
}
trap cleanup EXIT
build_sink # no SINK_BIN here: always ./examples/sink
build_tool bigmsg

# run LABEL SIZE BIGMSG_FLAGS -- SINK_FLAGS...
run() {
	local label=$1 size=$2 flags=$3
	shift 4
	"$BIN/sink" -hosts 127.0.0.1 -ports "$PORT" -quiet "$@" >"$BIN/sink.out" 2>"$BIN/sink.err" &
	SINK_PID=$!
	await_line "$SINK_PID" "$BIN/sink.out" 'listening on' || true
	printf '%-34s ' "$label"
	# shellcheck disable=SC2086
	"$BIN/bigmsg" -addr "127.0.0.1:$PORT" -pid "$SINK_PID" -size "$size" $flags
	kill -0 "$SINK_PID" # the sink must still run (set -e: the script stops if not)
	stop_pid "$SINK_PID"
	SINK_PID=""
}
run "streamed (-stream)" "$STREAM_SIZE" "" -- -stream -max-message -1
run "buffered, SIZE= declared" "$BUFFERED_SIZE" "-declare" -- -max-message -1 -max-buffered -1
run "buffered, no SIZE=" "$BUFFERED_SIZE" "" -- -max-message -1 -max-buffered -1
