#!/usr/bin/env bash
# bench/load.sh - throughput, CPU and memory of examples/sink next to two peers,
# driven by Postfix's smtp-source on loopback. `make load` runs it.
#
# Servers (each started fresh for every measurement, on its own 127.0.0.1 port):
#   smtpd      examples/sink -quiet $SINK_FLAGS                      port 12541
#   smtpd-alt  examples/sink -quiet $SINK_FLAGS_ALT (only if set)    port 12544
#              (built from git revision $ALT_REV when that is set)
#   smtp-sink  Postfix's C sink (smtp-sink [-u nobody] ADDR 1024)    port 12542
#   gosmtp     bench/peers/gosmtp, a sink on emersion/go-smtp        port 12543
# All of them accept and discard every message (smtp-source stops at the first
# reply that is not positive, so a run that completes had every message taken).
#
# Shapes (smtp-source speaks HELO, one command at a time, no pipelining):
#   a  1 session, a new connection for each 1 KiB message        A_MSGS messages
#   b  $SESSIONS sessions kept open (-d), 1 KiB messages         B_MSGS messages
#   c  $SESSIONS sessions kept open (-d), 1 MiB messages         C_MSGS messages
#
# In each of ROUNDS rounds, for each shape, every server is started, driven and
# stopped in turn (the order rotates each round, so noise hits all alike). A run
# measures msgs/s (smtp-source's wall clock), the server's CPU time per message
# (utime+stime of /proc/PID/stat before and after), its peak RSS (VmHWM), and
# "other load": busy CPU of the whole machine during the run not used by the
# server or smtp-source, in cores (a noisy neighbour; loopback softirq work also
# lands here). It also samples the server's anonymous memory (RssAnon) every
# 0.1 s: the memory the server allocates, without its binary's pages, and prints
# smtp-source's own CPU use ("client busy", in cores): near 1.00 the client, not
# the server, is the bottleneck. Then, unless IDLE_CONNS=0, smtpd and gosmtp each hold IDLE_CONNS
# idle connections (bench/tools/idleconns) and the server's RSS per connection
# is printed.
#
# Environment (knobs):
#   ROUNDS=3  SHAPES="a b c" (SHAPES="": none, only the idle connections)
#   A_MSGS=8000  B_MSGS=80000  C_MSGS=1200 (messages per run)  SESSIONS=20
#   SINK_FLAGS=""      extra flags for examples/sink, passed through as they are
#                      (e.g. -stream, -pipelining); a flag sink does not know
#                      makes the script stop before measuring, with sink's message
#   SINK_FLAGS_ALT=""  if set, a fourth server smtpd-alt with these flags instead
#   ALT_REV=""         if set, smtpd-alt is examples/sink built from this git
#                      revision (e.g. ALT_REV=a0bb121: the old build next to the
#                      new one, in one run), with SINK_FLAGS_ALT or else SINK_FLAGS
#   SERVERS="smtpd smtp-sink gosmtp"  subset/order (smtpd-alt is added when set)
#   IDLE_CONNS=1000    idle connections per server at the end (0: skip)
#   SHAPE_TIMEOUT=180  seconds a run may take
#   SINK_BIN=""        a sink binary to use instead of building ./examples/sink
#   GOPROCS=""         GOMAXPROCS for the two Go servers (smtpd, smtpd-alt and
#                      gosmtp alike); empty: Go's default, one per core.
#                      GOPROCS=1 gives them one thread of Go code, as smtp-sink has
#   OUT=<new dir under /tmp>  where raw.txt, summary.txt and server logs go
#   GO=go              the go command
# Needs: go, smtp-source and smtp-sink (apt-get install postfix, "No
# configuration"; its daemon is not used), ss (iproute2). Everything listens
# on and talks to 127.0.0.1 only; only processes this script started are
# stopped, by PID.
set -u -o pipefail
export PATH="$PATH:/usr/sbin:/sbin"
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$BENCH/lib.sh" || exit 1 # die, stop_pid, listening, build_sink, ... (sets GO, ROOT)
help_if_asked "$@"

ROUNDS=${ROUNDS:-3}
SHAPES=${SHAPES-a b c} # set but empty: no shapes (idle connections only)
A_MSGS=${A_MSGS:-8000}
B_MSGS=${B_MSGS:-80000}
C_MSGS=${C_MSGS:-1200}
SESSIONS=${SESSIONS:-20}
SINK_FLAGS=${SINK_FLAGS:-}
SINK_FLAGS_ALT=${SINK_FLAGS_ALT:-}
ALT_REV=${ALT_REV:-}
if [ -n "$ALT_REV" ] && [ -z "$SINK_FLAGS_ALT" ]; then
	SINK_FLAGS_ALT=${SINK_FLAGS:- } # a space: "set", so smtpd-alt runs
fi
SERVERS=${SERVERS:-smtpd smtp-sink gosmtp}
IDLE_CONNS=${IDLE_CONNS:-1000}
SHAPE_TIMEOUT=${SHAPE_TIMEOUT:-180}
SINK_BIN=${SINK_BIN:-}
GOPROCS=${GOPROCS:-}
HOST=127.0.0.1

need_cmd "$GO"
for tool in smtp-source smtp-sink; do
	need_cmd "$tool" "apt-get install postfix (choose \"No configuration\"; only its tools are used)"
done
need_cmd ss "apt-get install iproute2"
[ -z "$GOPROCS" ] || [[ $GOPROCS =~ ^[1-9][0-9]*$ ]] || die "GOPROCS must be empty or a number above 0, not '$GOPROCS'"
need_numbers ROUNDS A_MSGS B_MSGS C_MSGS SESSIONS IDLE_CONNS SHAPE_TIMEOUT
for s in $SHAPES; do
	case $s in a | b | c) ;; *) die "unknown shape '$s' (a, b or c)" ;; esac
done
if [ -n "$SINK_FLAGS_ALT" ] && [[ " $SERVERS " != *" smtpd-alt "* ]]; then
	SERVERS="$SERVERS smtpd-alt"
fi
for s in $SERVERS; do
	case $s in smtpd | smtpd-alt | smtp-sink | gosmtp) ;; *) die "unknown server '$s'" ;; esac
done

port_of() {
	case $1 in
	smtpd) echo 12541 ;;
	smtp-sink) echo 12542 ;;
	gosmtp) echo 12543 ;;
	smtpd-alt) echo 12544 ;;
	esac
}

make_dirs load # OUT, BIN, RAW

# ---- process bookkeeping: every process started here is stopped on exit -------
SRV_PID=""
CLIENT_PID=""                  # a client run as a direct child (idleconns)
CLIENT_PIDFILE=$BIN/client.pid # smtp-source's timeout, started in a subshell

cleanup() {
	local c
	if [ -s "$CLIENT_PIDFILE" ]; then
		c=$(cat "$CLIENT_PIDFILE")
		kill -0 "$c" 2>/dev/null && kill -TERM "$c" 2>/dev/null
	fi
	stop_pid "$CLIENT_PID"
	stop_server
	rm -rf "$BIN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# ---- build ---------------------------------------------------------------------
[ -n "$SINK_BIN" ] || echo "building examples/sink, bench/peers/gosmtp and bench/tools into $BIN"
build_sink "$SINK_BIN"
[ -z "$SINK_BIN" ] || echo "using SINK_BIN=$SINK_BIN; building bench/peers/gosmtp and bench/tools into $BIN"
(cd "$BENCH/peers/gosmtp" && "$GO" build -o "$BIN/gosmtp" .) || die "go build of bench/peers/gosmtp failed"
build_tool idleconns
cp "$BIN/sink" "$BIN/sink-alt"
if [ -n "$ALT_REV" ]; then
	echo "building examples/sink of revision $ALT_REV as smtpd-alt"
	build_sink_rev "$ALT_REV" "$BIN/sink-alt"
fi

# SINK_FLAGS pass through as they are; check once that sink takes them, so an
# unknown flag stops the script here with sink's own message.
check_sink_flags() { # BINARY FLAGS...
	local log=$BIN/flagcheck.log p bin=$1
	shift
	"$bin" -hosts $HOST -ports 0 -quiet "$@" >"$log" 2>&1 </dev/null &
	p=$!
	if ! await_line "$p" "$log" '^listening on'; then
		stop_pid "$p"
		echo "load.sh: examples/sink does not start with the flags '$*':" >&2
		head -n 1 "$log" >&2
		echo "(the flags it knows: go run ./examples/sink -h)" >&2
		return 1
	fi
	stop_pid "$p"
}
# shellcheck disable=SC2086
check_sink_flags "$BIN/sink" $SINK_FLAGS || exit 1
if [ -n "$SINK_FLAGS_ALT" ]; then
	# shellcheck disable=SC2086
	check_sink_flags "$BIN/sink-alt" $SINK_FLAGS_ALT || exit 1
fi

# ---- one server ----------------------------------------------------------------
# start_server NAME [IDLE]: starts NAME on its port and waits until it listens;
# sets SRV_PID. IDLE=1: settings to hold IDLE_CONNS connections.
start_server() {
	local name=$1 idle=${2:-0} port cmd
	port=$(port_of "$name")
	if listening "$port"; then die "port $port is already in use; not starting $name"; fi
	local maxp=$((IDLE_CONNS + 100))
	case $name in
	smtpd | smtpd-alt)
		local flags=$SINK_FLAGS
		local bin=$BIN/sink
		[ "$name" = smtpd-alt ] && flags=$SINK_FLAGS_ALT bin=$BIN/sink-alt
		cmd=("$bin" -hosts $HOST -ports "$port" -quiet -grace 2s)
		[ "$idle" = 1 ] && cmd+=(-max-processings "$maxp")
		# shellcheck disable=SC2206
		cmd+=($flags)
		;;
	smtp-sink)
		cmd=(smtp-sink)
		[ "$(id -u)" = 0 ] && cmd+=(-u nobody)
		[ "$idle" = 1 ] && cmd+=(-m "$maxp")
		cmd+=("$HOST:$port" 1024)
		;;
	gosmtp)
		cmd=("$BIN/gosmtp" -addr "$HOST:$port")
		;;
	esac
	if [ -n "$GOPROCS" ] && [ "$name" != smtp-sink ]; then
		cmd=(env "GOMAXPROCS=$GOPROCS" "${cmd[@]}") # env execs it: SRV_PID stays the server's
	fi
	echo "# start $name: ${cmd[*]}" >>"$OUT/$name.log"
	if start_listening "$port" "$OUT/$name.log" "${cmd[@]}"; then
		sleep 0.2 # let it finish starting (it may still be reading its flags)
		return 0
	fi
	echo "load.sh: $name did not listen on $HOST:$port within 10 s; its log:" >&2
	tail -n 10 "$OUT/$name.log" >&2
	exit 1
}

TCK=$(getconf CLK_TCK)
cpu_ticks() { # PID: utime+stime in clock ticks (fields 14 and 15, after the ")")
	sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12 + $13}'
}
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null; }
# anon_peak PID FILE: samples PID's RssAnon every 0.1 s until FILE.stop exists or
# PID ends, then writes the highest value (KiB) to FILE. Builtins only, but sleep.
anon_peak() {
	local pid=$1 file=$2 peak=0 k v _
	while [ ! -e "$file.stop" ] && [ -r "/proc/$pid/status" ]; do
		while read -r k v _; do
			if [ "$k" = RssAnon: ]; then
				[ "$v" -gt "$peak" ] && peak=$v
				break
			fi
		done <"/proc/$pid/status" 2>/dev/null
		sleep 0.1
	done
	echo "$peak" >"$file"
}
machine_busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }
secs_of() { # "1m2.345s" -> 62.345
	awk -v t="$1" 'BEGIN { split(t, p, "m"); sub("s", "", p[2]); printf "%.3f", p[1] * 60 + p[2] }'
}

# run_shape SHAPE NAME ROUND: one measured run against the server now running.
run_shape() {
	local shape=$1 name=$2 round=$3 port sessions msgs len args
	port=$(port_of "$name")
	case $shape in
	a) sessions=1 msgs=$A_MSGS len=1024 args=() ;;
	b) sessions=$SESSIONS msgs=$B_MSGS len=1024 args=(-d) ;;
	c) sessions=$SESSIONS msgs=$C_MSGS len=1048576 args=(-d) ;;
	esac
	local c0 c1 m0 m1 t0 t1 rc rss anon sampler
	rm -f "$BIN/anon" "$BIN/anon.stop"
	anon_peak "$SRV_PID" "$BIN/anon" &
	sampler=$!
	c0=$(cpu_ticks "$SRV_PID")
	m0=$(machine_busy)
	t0=$(date +%s.%N)
	(
		timeout "$SHAPE_TIMEOUT" smtp-source -M localhost -f sender@example.org -t rcpt@example.org \
			-s "$sessions" -m "$msgs" -l "$len" "${args[@]}" "$HOST:$port" >"$BIN/client.out" 2>&1 &
		echo $! >"$CLIENT_PIDFILE"
		wait $!
		r=$?
		times >"$BIN/client.times"
		exit $r
	) &
	# a background job and wait: a signal to this script is handled at once
	wait $!
	rc=$?
	t1=$(date +%s.%N)
	m1=$(machine_busy)
	: >"$CLIENT_PIDFILE"
	c1=$(cpu_ticks "$SRV_PID")
	rss=$(hwm_kb "$SRV_PID")
	: >"$BIN/anon.stop"
	wait "$sampler" 2>/dev/null
	anon=$(cat "$BIN/anon" 2>/dev/null || echo 0)
	if ! kill -0 "$SRV_PID" 2>/dev/null; then
		rc=99
		c1=$c0
		rss=0
	fi
	local ccpu
	# times: line 1 is the subshell, line 2 its children (timeout, smtp-source)
	ccpu=$(sed -n 2p "$BIN/client.times" 2>/dev/null | {
		read -r u s || true
		if [ -n "${u:-}" ]; then awk -v u="$(secs_of "$u")" -v s="$(secs_of "$s")" 'BEGIN{printf "%.2f", u + s}'; else echo NA; fi
	})
	awk -v round="$round" -v shape="$shape" -v name="$name" -v msgs="$msgs" -v sessions="$sessions" -v len="$len" \
		-v t0="$t0" -v t1="$t1" -v c0="$c0" -v c1="$c1" -v m0="$m0" -v m1="$m1" -v tck="$TCK" \
		-v rss="${rss:-0}" -v anon="${anon:-0}" -v cc="$ccpu" -v rc="$rc" 'BEGIN {
		secs = t1 - t0; cpu = (c1 - c0) / tck
		mps = (rc == 0 && secs > 0) ? sprintf("%.0f", msgs / secs) : "NA"
		other = "NA"; busy = "NA"
		if (cc != "NA" && secs > 0) {
			o = ((m1 - m0) / tck - cpu - cc) / secs; other = sprintf("%.2f", o < 0 ? 0 : o)
			busy = sprintf("%.2f", cc / secs)
		}
		printf "round=%s shape=%s server=%s msgs=%d sessions=%d len=%d secs=%.3f mps=%s cpu_s=%.2f cpu_us_msg=%.0f rss_kb=%d anon_kb=%d client_cpu_s=%s client_busy=%s other_load=%s rc=%d\n",
			round, shape, name, msgs, sessions, len, secs, mps, cpu, cpu * 1e6 / msgs, rss, anon, cc, busy, other, rc
	}' | tee -a "$RAW"
	if [ "$rc" != 0 ]; then
		echo "load.sh: shape $shape against $name failed (rc=$rc; 124: SHAPE_TIMEOUT); smtp-source said:" >&2
		tail -n 5 "$BIN/client.out" >&2
	fi
}

# ---- measured rounds -----------------------------------------------------------
read -r -a LIST <<<"$SERVERS"
N=${#LIST[@]}
{
	echo "# load.sh $(date -u +%Y-%m-%dT%H:%M:%SZ) cpus=$(nproc) kernel=$(uname -r) $("$GO" version)"
	echo "# postfix=$(dpkg-query -W -f='${Version}' postfix 2>/dev/null || echo '?')" \
		"go-smtp=$(awk '$1 == "require" && $2 ~ /go-smtp$/ {print $3} $1 ~ /go-smtp$/ {print $2}' "$BENCH/peers/gosmtp/go.mod" | head -n 1)"
	echo "# rounds=$ROUNDS shapes='$SHAPES' servers='$SERVERS' A_MSGS=$A_MSGS B_MSGS=$B_MSGS C_MSGS=$C_MSGS sessions=$SESSIONS"
	echo "# SINK_FLAGS='$SINK_FLAGS' SINK_FLAGS_ALT='$SINK_FLAGS_ALT' ALT_REV='$ALT_REV' GOPROCS='$GOPROCS'"
} | tee -a "$RAW"
start_time=$SECONDS
for r in $(seq 1 "$ROUNDS"); do
	echo "# round $r $(date -u +%H:%M:%S) loadavg $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RAW"
	for shape in $SHAPES; do
		for j in $(seq 0 $((N - 1))); do
			name=${LIST[$(((r - 1 + j) % N))]}
			start_server "$name"
			run_shape "$shape" "$name" "$r"
			stop_server
			sleep 0.3
		done
	done
done

# ---- idle connections ----------------------------------------------------------
if [ "$IDLE_CONNS" -gt 0 ]; then
	# no ulimit -n here: only Go programs run in this step, and each raises its
	# own soft open-file limit to the hard one at start (Go 1.19 and later)
	for name in smtpd smtpd-alt gosmtp; do
		[[ " $SERVERS " == *" $name "* ]] || continue
		start_server "$name" 1
		sleep 0.5
		"$BIN/idleconns" -addr "$HOST:$(port_of "$name")" -pid "$SRV_PID" -n "$IDLE_CONNS" -label "$name" >"$BIN/idle.out" &
		CLIENT_PID=$!
		wait $CLIENT_PID || echo "load.sh: idle connections against $name failed" >&2
		CLIENT_PID=""
		tee -a "$RAW" <"$BIN/idle.out"
		stop_server
	done
fi
echo "# done in $((SECONDS - start_time)) s" | tee -a "$RAW"

# ---- tables ---------------------------------------------------------------------
awk -v order="$SERVERS" -v sessions="$SESSIONS" '
function med(s,   a, n, i, j, x) {
	n = split(s, a, " ")
	if (n == 0) return "NA"
	for (i = 2; i <= n; i++) { x = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
	return (n % 2) ? a[(n + 1) / 2] + 0 : (a[n / 2] + a[n / 2 + 1]) / 2
}
function lo(s,   a, n, i, m) { n = split(s, a, " "); m = a[1] + 0; for (i = 2; i <= n; i++) if (a[i] + 0 < m) m = a[i] + 0; return m }
function hi(s,   a, n, i, m) { n = split(s, a, " "); m = a[1] + 0; for (i = 2; i <= n; i++) if (a[i] + 0 > m) m = a[i] + 0; return m }
function kv(   i, p) { delete f; for (i = 1; i <= NF; i++) { split($i, p, "="); f[p[1]] = p[2] } }
/^round=/ {
	kv(); k = f["shape"] SUBSEP f["server"]
	seen[f["shape"]] = 1; runs[k]++; msgs[f["shape"]] = f["msgs"]
	if (f["rc"] == 0 && f["mps"] != "NA") {
		ok[k]++; mps[k] = mps[k] " " f["mps"]; cpu[k] = cpu[k] " " f["cpu_us_msg"]; rss[k] = rss[k] " " f["rss_kb"]
		if ("anon_kb" in f) anon[k] = anon[k] " " f["anon_kb"]
		if (f["other_load"] != "NA") oth[k] = oth[k] " " f["other_load"]
		if (f["client_busy"] != "" && f["client_busy"] != "NA") cbusy[k] = cbusy[k] " " f["client_busy"]
	}
}
/^idle / { kv(); idle[f["label"]] = f["kib_per_conn"]; iconns[f["label"]] = f["conns"]; ibefore[f["label"]] = f["rss_before_kb"]; iafter[f["label"]] = f["rss_after_kb"]; ifail[f["label"]] = f["failed"] }
END {
	desc["a"] = "1 session, a new connection per 1 KiB message"
	desc["b"] = sessions " persistent sessions, 1 KiB messages"
	desc["c"] = sessions " persistent sessions, 1 MiB messages"
	np = split(order, srv, " ")
	ns = split("a b c", sh, " ")
	for (s = 1; s <= ns; s++) {
		if (!(sh[s] in seen)) continue
		printf "\nshape %s: %s, %d messages per run\n", sh[s], desc[sh[s]], msgs[sh[s]]
		printf "%-10s %9s %15s %12s %11s %13s %10s %12s %11s %7s\n", "server", "msgs/s", "min-max", "vs smtp-sink", "CPU us/msg", "peak RSS MiB", "anon MiB", "client busy", "other load", "ok"
		base = med(mps[sh[s] SUBSEP "smtp-sink"])
		for (q = 1; q <= np; q++) {
			k = sh[s] SUBSEP srv[q]
			if (!(k in runs)) continue
			m = med(mps[k])
			ratio = (m != "NA" && base != "NA" && base > 0) ? sprintf("%.2f", m / base) : "NA"
			if (m == "NA") {
				printf "%-10s %9s %15s %12s %11s %13s %10s %12s %11s %7s\n", srv[q], "NA", "-", "NA", "NA", "NA", "NA", "NA", "NA", ok[k] + 0 "/" runs[k]
				continue
			}
			printf "%-10s %9.0f %15s %12s %11.0f %13.1f %10s %12s %11s %7s\n", srv[q], m, lo(mps[k]) "-" hi(mps[k]), ratio, med(cpu[k]), hi(rss[k]) / 1024,
				(anon[k] == "" ? "NA" : sprintf("%.1f", hi(anon[k]) / 1024)), (cbusy[k] == "" ? "NA" : sprintf("%.2f", med(cbusy[k]))),
				(oth[k] == "" ? "NA" : sprintf("%.2f", med(oth[k]))), ok[k] + 0 "/" runs[k]
		}
	}
	n = 0
	for (l in idle) n++
	if (n) {
		printf "\nidle connections (RSS growth after each greeted, idle)\n"
		printf "%-10s %7s %9s %21s %10s\n", "server", "conns", "KiB/conn", "RSS MiB before-after", "vs gosmtp"
		for (q = 1; q <= np; q++) {
			l = srv[q]
			if (!(l in idle)) continue
			r = ("gosmtp" in idle && idle["gosmtp"] > 0) ? sprintf("%.2f", idle[l] / idle["gosmtp"]) : "NA"
			printf "%-10s %7d %9.1f %21s %10s%s\n", l, iconns[l], idle[l], sprintf("%.1f-%.1f", ibefore[l] / 1024, iafter[l] / 1024), r, (ifail[l] > 0 ? "  (" ifail[l] " failed)" : "")
		}
	}
	printf "\nmsgs/s: median over rounds of messages / smtp-source wall time; vs smtp-sink: ratio of medians;\n"
	printf "CPU us/msg: median server CPU (user+system) per message; peak RSS: highest VmHWM over rounds;\n"
	printf "anon MiB: highest sampled RssAnon (the server'"'"'s own allocations, no binary pages);\n"
	printf "client busy: median CPU of smtp-source in cores (near 1.00: the client is the bottleneck);\n"
	printf "other load: median busy cores not used by the server or smtp-source (noise; quiet box < 0.1).\n"
}' "$RAW" | tee "$OUT/summary.txt"
echo
echo "raw lines: $RAW   tables: $OUT/summary.txt   server logs: $OUT/*.log"
