#!/usr/bin/env bash
# User and system CPU time and context switches per request while the bench loads one path.
#
#   tests/bench/soakstat.sh [--nginx] [--c N] [--tls] [--oauth]      # from the workspace root
#
# Runs `bench --soak 16` with these arguments (the proxy, or nginx with `--nginx`, at c=32 or
# `--c N`), waits 4 s, reads utime and stime of the path's processes (nginx: master and
# workers) and the context switches of all their threads from /proc, again 8 s later, and
# divides by the requests served meanwhile (the soak's rate times 8 s). Splits what
# `CPU per request` in the full run adds up: the kernel's share (the loopback TCP stack) is
# about the same for any proxy; user time is where proxies differ. Linux only.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q --release -p neurolink-tests --bin bench -p neurolink-daemon
log=$(mktemp)
target/release/bench --soak 16 "$@" > "$log" 2>&1 &
bench=$!
for _ in $(seq 600); do grep -q "pids\? \[\?[0-9]" "$log" && break; sleep 0.1; done
pids=$(grep -o "pids\? \[\?[0-9, ]*" "$log" | head -1 | sed 's/pids\? \[\?//; s/,/ /g')
[ -n "$pids" ] || { cat "$log" >&2; exit 1; }
snap() {
  local u=0 s=0 v=0 n=0 p t uu ss vv nn
  for p in $pids; do
    read -r uu ss < <(awk '{print $14, $15}' "/proc/$p/stat")
    u=$((u + uu)); s=$((s + ss))
    # A thread may end between the listing and the read: it counts as 0.
    for t in /proc/"$p"/task/*; do
      vv=$(awk '/^voluntary_ctxt/ {print $2}' "$t/status" 2>/dev/null || true)
      nn=$(awk '/^nonvoluntary_ctxt/ {print $2}' "$t/status" 2>/dev/null || true)
      v=$((v + ${vv:-0})); n=$((n + ${nn:-0}))
    done
  done
  echo "$u $s $v $n"
}
sleep 4
read -r u0 s0 v0 n0 < <(snap)
sleep 8
read -r u1 s1 v1 n1 < <(snap)
wait "$bench"
rps=$(grep -o "[0-9]* req/s" "$log" | awk '{print $1}')
tick=$(getconf CLK_TCK)
awk -v rps="$rps" -v tick="$tick" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v v=$((v1 - v0)) -v n=$((n1 - n0)) 'BEGIN {
  req = rps * 8; us = 1e6 / tick
  printf "%d req/s; per request: user %.1f us, system %.1f us, voluntary switches %.3f, involuntary %.3f\n", rps, u * us / req, s * us / req, v / req, n / req
}'
rm -f "$log"
