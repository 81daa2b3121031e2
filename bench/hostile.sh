#!/usr/bin/env bash
# bench/hostile.sh - examples/sink's memory under hostile input. `make load-hostile`
# runs it.
#
# Each scenario runs against a fresh sink on 127.0.0.1:$PORT, sent by
# bench/tools/hostile; the figure is the growth of the sink's peak RSS (VmHWM)
# over its idle baseline, with the replies the clients saw. The line scenarios
# run once for each size in LINE_SIZES (bytes of hostile parameters): by default
# 1 MiB, which puts the line just over sink's 1 MiB line limit (-buffer-max), and
# 1 MiB - 1 KiB, just under it, so the command is parsed:
#   mail  $SESSIONS parallel sessions, each EHLO and then $LINES lines of
#         "MAIL FROM:<a@example.org> a a a ..." (SIZE bytes of " a")
#   auth  the same with "AUTH PLAIN w0 w1 ..." (sink -auth optional -user u -pass p
#         -tls forbidden, so AUTH is offered in the clear)
#   noop  the same with "NOOP xxx..."
#   ehlo  one session, one "EHLO <SIZE bytes name>" line
#   data  $DATA_SESSIONS parallel sessions each sending one $DATA_SIZE-byte message
#         (sink -max-message 64 MiB, plus -max-buffered 67108864 when sink -h lists
#         that flag), then RSET: in sync = its reply is 250 and nothing else follows
# Each session reads the reply to every line; replies are counted by code, "close"
# counts connections the server closed before a reply, "timeout" lines with no
# reply within 30 s. "alive" says whether the sink was still running afterwards.
#
# Environment (knobs):
#   SCENARIOS="mail auth noop ehlo data"  SESSIONS=16  LINES=8
#   LINE_SIZES="1048576 1047552"
#   DATA_SESSIONS=6  DATA_SIZE=31457280  PORT=12546
#   SINK_FLAGS=""   extra flags for every sink, passed through as they are
#   SINK_BIN=""     a sink binary to use instead of building ./examples/sink
#   OUT=<new dir under /tmp>  raw lines (raw.txt), table and sink logs
# Loopback only; the sinks it starts are stopped by PID when it exits.
set -u -o pipefail
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$BENCH/lib.sh" || exit 1 # die, stop_pid, listening, build_sink, ... (sets GO, ROOT)
help_if_asked "$@"

SCENARIOS=${SCENARIOS:-mail auth noop ehlo data}
SESSIONS=${SESSIONS:-16}
LINES=${LINES:-8}
LINE_SIZES=${LINE_SIZES:-1048576 1047552}
DATA_SESSIONS=${DATA_SESSIONS:-6}
DATA_SIZE=${DATA_SIZE:-31457280}
PORT=${PORT:-12546}
SINK_FLAGS=${SINK_FLAGS:-}
SINK_BIN=${SINK_BIN:-}
HOST=127.0.0.1

need_cmd "$GO"
need_cmd ss "apt-get install iproute2"
need_numbers SESSIONS LINES DATA_SESSIONS DATA_SIZE PORT
for v in $LINE_SIZES; do
	[[ $v =~ ^[0-9]+$ ]] || die "LINE_SIZES must be numbers, not '$v'"
done
for s in $SCENARIOS; do
	case $s in mail | auth | noop | ehlo | data) ;; *) die "unknown scenario '$s'" ;; esac
done

make_dirs hostile # OUT, BIN, RAW

SRV_PID=""
CLIENT_PID=""
cleanup() {
	stop_pid "$CLIENT_PID"
	stop_pid "$SRV_PID"
	rm -rf "$BIN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

build_sink "$SINK_BIN"
build_tool hostile

if "$BIN/sink" -h 2>&1 | grep -q -- '^  -max-buffered'; then
	MAX_BUFFERED=(-max-buffered 67108864)
	buffered_note="sink has -max-buffered: the data scenario runs with -max-buffered 67108864"
else
	MAX_BUFFERED=()
	buffered_note="sink -h lists no -max-buffered: the data scenario runs without it"
fi
echo "$buffered_note"

# run_scenario NAME SIZE SINK-FLAGS... : fresh sink, one scenario, stop.
run_scenario() {
	local name=$1 size=$2 alive
	shift 2
	local cmd=("$BIN/sink" -hosts $HOST -ports "$PORT" -quiet -grace 2s "$@")
	# shellcheck disable=SC2206
	cmd+=($SINK_FLAGS)
	listening "$PORT" && die "port $PORT is already in use"
	echo "# $name: ${cmd[*]}" >>"$OUT/sink-$name.log"
	if ! start_listening "$PORT" "$OUT/sink-$name.log" "${cmd[@]}"; then
		echo "hostile.sh: sink did not start for $name; its log:" >&2
		grep -v '^  ' "$OUT/sink-$name.log" | tail -n 3 >&2
		exit 1
	fi
	sleep 0.5 # idle baseline
	local args=(-addr "$HOST:$PORT" -pid "$SRV_PID" -scenario "$name" -size "$size")
	case $name in
	data) args+=(-sessions "$DATA_SESSIONS" -msg-size "$DATA_SIZE") ;;
	*) args+=(-sessions "$SESSIONS" -lines "$LINES") ;;
	esac
	"$BIN/hostile" "${args[@]}" >"$BIN/out" 2>"$BIN/err" &
	CLIENT_PID=$!
	wait "$CLIENT_PID" || {
		echo "hostile.sh: $name: the client failed:" >&2
		tail -n 3 "$BIN/err" >&2
	}
	CLIENT_PID=""
	if kill -0 "$SRV_PID" 2>/dev/null; then alive=yes; else alive=no; fi
	echo "$(cat "$BIN/out") size=$size alive=$alive flags='${cmd[*]:5}'" | tee -a "$RAW"
	stop_server
	sleep 0.3
}

echo "# hostile.sh $(date -u +%Y-%m-%dT%H:%M:%SZ) cpus=$(nproc) $("$GO" version)" | tee -a "$RAW"
echo "# $buffered_note" >>"$RAW"
for s in $SCENARIOS; do
	[ "$s" = data ] && continue
	for size in $LINE_SIZES; do
		case $s in
		auth) run_scenario auth "$size" -auth optional -user u -pass p -tls forbidden ;;
		*) run_scenario "$s" "$size" ;;
		esac
	done
done
if [[ " $SCENARIOS " == *" data "* ]]; then
	run_scenario data 0 -max-message 67108864 "${MAX_BUFFERED[@]}"
fi

awk -v sessions="$SESSIONS" -v lines="$LINES" -v dsess="$DATA_SESSIONS" -v dsize="$DATA_SIZE" '
function kv(   i, p) { delete f; for (i = 1; i <= NF; i++) { split($i, p, "="); f[p[1]] = p[2] } }
/^scenario=/ {
	kv()
	what = f["scenario"]
	kib = sprintf("%g KiB", f["size"] / 1024)
	if (what == "ehlo") what = "ehlo: 1 x EHLO <" kib " name>"
	else if (what == "data") what = "data: " dsess " x " sprintf("%g", dsize / 1048576) " MiB message"
	else what = what ": " sessions " x " lines " x " kib " params"
	extra = (f["scenario"] == "data") ? " in sync " f["in_sync"] : ""
	printf "%-34s %9s %6s   %s%s\n", what, f["growth_mib"], f["alive"], f["replies"], extra
	n++
}
BEGIN { printf "\n%-34s %9s %6s   %s\n", "scenario", "RSS +MiB", "alive", "replies seen (code:count; close = closed by server)" }
END { if (!n) print "(no results)" }' "$RAW" | tee "$OUT/summary.txt"
echo "$buffered_note" | tee -a "$OUT/summary.txt"
echo "RSS +MiB: the sink's peak RSS (VmHWM) after the scenario minus its idle VmHWM." | tee -a "$OUT/summary.txt"
echo
echo "raw lines: $RAW   table: $OUT/summary.txt   sink logs: $OUT/sink-*.log"
