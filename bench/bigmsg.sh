#!/usr/bin/env bash
# bench/bigmsg.sh - one large message through examples/sink on loopback, timed, with
# the sink's peak RSS: streamed (-stream, default 1 GiB) and buffered (default
# 256 MiB, with and without MAIL FROM SIZE=). `make load-big` runs it.
#
# Knobs: STREAM_SIZE=1073741824 BUFFERED_SIZE=268435456 PORT=12547
set -euo pipefail
export GOWORK=off # each module on its own go.mod (go.work is for go run ./examples/queue)
cd "$(dirname "${BASH_SOURCE[0]}")/.."
STREAM_SIZE=${STREAM_SIZE:-1073741824}
BUFFERED_SIZE=${BUFFERED_SIZE:-268435456}
PORT=${PORT:-12547}
GO=${GO:-go}
BIN=$(mktemp -d)
SINK_PID=""
cleanup() {
	[ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null && wait "$SINK_PID" 2>/dev/null
	rm -rf "$BIN"
}
trap cleanup EXIT
"$GO" build -o "$BIN/sink" ./examples/sink
(cd bench/tools && "$GO" build -o "$BIN/bigmsg" ./bigmsg)

# run LABEL SIZE BIGMSG_FLAGS -- SINK_FLAGS...
run() {
	local label=$1 size=$2 flags=$3
	shift 4
	"$BIN/sink" -hosts 127.0.0.1 -ports "$PORT" -quiet "$@" >"$BIN/sink.out" 2>"$BIN/sink.err" &
	SINK_PID=$!
	for _ in $(seq 50); do grep -q 'listening on' "$BIN/sink.out" 2>/dev/null && break; sleep 0.1; done
	printf '%-34s ' "$label"
	# shellcheck disable=SC2086
	"$BIN/bigmsg" -addr "127.0.0.1:$PORT" -pid "$SINK_PID" -size "$size" $flags
	kill "$SINK_PID"; wait "$SINK_PID" 2>/dev/null || true
	SINK_PID=""
}
run "streamed (-stream)" "$STREAM_SIZE" "" -- -stream -max-message -1
run "buffered, SIZE= declared" "$BUFFERED_SIZE" "-declare" -- -max-message -1 -max-buffered -1
run "buffered, no SIZE=" "$BUFFERED_SIZE" "" -- -max-message -1 -max-buffered -1
