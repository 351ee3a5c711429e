#!/usr/bin/env bash
# End-to-end load benchmark of `podgate serve` against a constant-reply
# reference on the same TLS + HTTP stack (examples/constant_reply.rs).
#
#   bash bench/load.sh            # full run, about 4 minutes
#   ROUNDS=1 DURATION=5 bash bench/load.sh   # quick look
#
# What it does (see BENCHMARKS.md for the numbers of the last run):
#  1. installs h2load (Debian's nghttp2-client) if it is missing;
#  2. builds the release binary and the reference (cargo build --release);
#  3. measures podgate's start-up to ready (spawn -> GET /readyz 200) and its
#     idle RSS;
#  4. starts podgate (`serve --self-signed --log-format json`, logs to a file:
#     the per-review log line is part of what is measured) and the reference,
#     then, alternating between the two servers ROUNDS times:
#       - peak: h2load --h1 (HTTPS, HTTP/1.1 keep-alive, ALPN http/1.1),
#         64 connections, one request in flight each, the 9 KB Pod CREATE
#         review, DURATION seconds after a 2 s warm-up;
#       - fixed rate: 10 connections x 500 reviews/s = 5,000 reviews/s,
#         latency of every request from h2load's --log-file, p50/p99;
#  5. prints medians, podgate's throughput as a ratio of the reference's, and
#     the RSS high-water mark (VmHWM) and current RSS from /proc.
#
# Pinning: none. Both servers and h2load run unpinned on all cores, exactly
# alike for both servers (h2load uses one thread, the servers their default
# tokio worker count = number of cores). On a 2-core machine the load
# generator competes with the server; the ratio, measured in the same run
# with the rounds interleaved, is the figure that counts.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-5}"
DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-64}"
RATE_CONNECTIONS="${RATE_CONNECTIONS:-10}"
RATE_PER_CONNECTION="${RATE_PER_CONNECTION:-500}"
BODY="${BODY:-tests/fixtures/reviews/pod-create.json}"
PODGATE_PORT="${PODGATE_PORT:-18443}"
METRICS_PORT="${METRICS_PORT:-19090}"
REFERENCE_PORT="${REFERENCE_PORT:-18444}"

if ! command -v h2load >/dev/null; then
  echo "--- installing h2load (nghttp2-client)"
  apt-get update -qq && apt-get install -y -qq nghttp2-client >/dev/null
fi

echo "--- building (release)"
cargo build --release --locked --bin podgate --example constant_reply 2>&1 | tail -1
PODGATE=target/release/podgate
REFERENCE=target/release/examples/constant_reply

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# GET /readyz with bash's /dev/tcp (no process spawned per poll); true on 200.
ready() {
  local line
  { exec 3<>"/dev/tcp/127.0.0.1/$METRICS_PORT"; } 2>/dev/null || return 1
  printf 'GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3
  IFS= read -r -t 1 line <&3 || true
  exec 3<&- 3>&-
  [[ "$line" == "HTTP/1.1 200"* ]]
}

start_podgate() {
  "$PODGATE" serve --self-signed --listen "127.0.0.1:$PODGATE_PORT" --metrics-listen "127.0.0.1:$METRICS_PORT" \
    --log-format json >"$WORK/podgate.log" 2>&1 &
  PODGATE_PID=$!
}

stop() {
  kill "$1"
  wait "$1" 2>/dev/null || true
}

kib() { awk -v key="$2:" '$1 == key {print $2}' "/proc/$1/status"; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2}'; }

echo "--- start-up to ready (5 runs)"
for _ in 1 2 3 4 5; do
  t0=$EPOCHREALTIME
  start_podgate
  until ready; do
    kill -0 "$PODGATE_PID" 2>/dev/null || { cat "$WORK/podgate.log"; exit 1; }
    sleep 0.001
  done
  t1=$EPOCHREALTIME
  awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f\n", (b - a) * 1000}' >>"$WORK/startup"
  sleep 0.5
  kib "$PODGATE_PID" VmRSS >>"$WORK/idle_rss"
  stop "$PODGATE_PID"
done
STARTUP_MS=$(median <"$WORK/startup")
IDLE_KIB=$(median <"$WORK/idle_rss")
echo "start-up ms: $(tr '\n' ' ' <"$WORK/startup")-> median $STARTUP_MS; idle RSS KiB: $(tr '\n' ' ' <"$WORK/idle_rss")"

start_podgate
PIDS+=("$PODGATE_PID")
"$REFERENCE" "127.0.0.1:$REFERENCE_PORT" 2>"$WORK/reference.log" &
REFERENCE_PID=$!
PIDS+=("$REFERENCE_PID")
until ready; do sleep 0.01; done
sleep 0.5

# Check that both answer the review before measuring anything.
for port in "$PODGATE_PORT" "$REFERENCE_PORT"; do
  h2load --h1 -n 10 -c 1 -d "$BODY" -H 'content-type: application/json' \
    "https://127.0.0.1:$port/validate" >"$WORK/check" 2>&1
  grep -q '10 succeeded' "$WORK/check" || { cat "$WORK/check"; exit 1; }
done

peak() { # port -> reviews/s
  h2load --h1 -c "$CONNECTIONS" -t 1 -m 1 -D "$DURATION" --warm-up-time 2 -d "$BODY" \
    -H 'content-type: application/json' "https://127.0.0.1:$1/validate" >"$WORK/peak" 2>&1
  grep -q ' 0 failed, 0 errored' "$WORK/peak" || { cat "$WORK/peak" >&2; exit 1; }
  awk '/^finished in/ {gsub(",", ""); print $4}' "$WORK/peak"
}

rate() { # port -> "p50_us p99_us achieved_rps"
  rm -f "$WORK/latency.log"
  h2load --h1 -c "$RATE_CONNECTIONS" -t 1 -m 1 --rps "$RATE_PER_CONNECTION" -D "$DURATION" --warm-up-time 2 \
    -d "$BODY" -H 'content-type: application/json' --log-file "$WORK/latency.log" \
    "https://127.0.0.1:$1/validate" >"$WORK/rate" 2>&1
  grep -q ' 0 failed, 0 errored' "$WORK/rate" || { cat "$WORK/rate" >&2; exit 1; }
  local rps
  rps=$(awk '/^finished in/ {gsub(",", ""); print $4}' "$WORK/rate")
  cut -f3 "$WORK/latency.log" | sort -n | awk -v rps="$rps" '{a[NR]=$1}
    END {printf "%d %d %.0f\n", a[int(NR*0.50)], a[int(NR*0.99)], rps}'
}

echo "--- $ROUNDS rounds, alternating podgate / reference (peak: $CONNECTIONS connections, ${DURATION}s;" \
  "fixed rate: $RATE_CONNECTIONS x $RATE_PER_CONNECTION/s)"
for round in $(seq "$ROUNDS"); do
  p=$(peak "$PODGATE_PORT")
  r=$(peak "$REFERENCE_PORT")
  echo "$p" >>"$WORK/peak_podgate"
  echo "$r" >>"$WORK/peak_reference"
  awk -v p="$p" -v r="$r" 'BEGIN {printf "%.3f\n", p / r}' >>"$WORK/ratio"
  read -r p50 p99 achieved < <(rate "$PODGATE_PORT")
  read -r rp50 rp99 rachieved < <(rate "$REFERENCE_PORT")
  echo "$p50" >>"$WORK/p50"
  echo "$p99" >>"$WORK/p99"
  echo "$rp50" >>"$WORK/rp50"
  echo "$rp99" >>"$WORK/rp99"
  printf 'round %d: peak podgate %s/s, reference %s/s (ratio %s); at %s/s p50/p99 podgate %s/%s us, reference %s/%s us (%s/s)\n' \
    "$round" "$p" "$r" "$(tail -1 "$WORK/ratio")" "$achieved" "$p50" "$p99" "$rp50" "$rp99" "$rachieved"
done

HWM_KIB=$(kib "$PODGATE_PID" VmHWM)
RSS_AFTER_KIB=$(kib "$PODGATE_PID" VmRSS)
REF_HWM_KIB=$(kib "$REFERENCE_PID" VmHWM)
LOG_LINES=$(grep -c '"admission review"' "$WORK/podgate.log" || true)

mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
echo
echo "--- results (medians of $ROUNDS rounds)"
echo "machine: $(nproc) cores, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(uname -r)"
echo "load generator: $(h2load --version | head -1), unpinned; body: $BODY ($(stat -c %s "$BODY") bytes)"
echo
echo "| Measure | podgate | reference (constant reply) | Target |"
echo "| --- | --- | --- | --- |"
echo "| Peak reviews/s, $CONNECTIONS connections | $(median <"$WORK/peak_podgate") | $(median <"$WORK/peak_reference") | |"
echo "| Throughput ratio podgate / reference | $(median <"$WORK/ratio") | 1 | >= 0.8 |"
echo "| p50 latency at $((RATE_CONNECTIONS * RATE_PER_CONNECTION)) reviews/s | $(median <"$WORK/p50") us | $(median <"$WORK/rp50") us | |"
echo "| p99 latency at $((RATE_CONNECTIONS * RATE_PER_CONNECTION)) reviews/s | $(median <"$WORK/p99") us | $(median <"$WORK/rp99") us | < 2000 us |"
echo "| RSS idle (VmRSS after start-up) | $(mib "$IDLE_KIB") MiB | | < 15 MiB |"
echo "| RSS under load (VmHWM) | $(mib "$HWM_KIB") MiB | $(mib "$REF_HWM_KIB") MiB | < 30 MiB |"
echo "| RSS after load (VmRSS) | $(mib "$RSS_AFTER_KIB") MiB | | |"
echo "| Start-up to ready (spawn -> /readyz 200) | $STARTUP_MS ms | | < 100 ms |"
echo
echo "per-round ratios: $(tr '\n' ' ' <"$WORK/ratio")"
echo "podgate wrote $LOG_LINES review log lines ($(stat -c %s "$WORK/podgate.log") bytes)"
