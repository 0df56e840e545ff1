#!/usr/bin/env bash
# Instructions per request, counted by callgrind while the bench loads the proxy at c=32.
#
#   tests/bench/callgrind.sh [--bin PATH] [--tls] [--oauth]      # from the workspace root
#
# Builds the proxy with the `profiling` profile (the release build with line tables), runs it
# under valgrind behind a `NEUROLINK_BIN` wrapper while `bench --soak` loads it, zeroes the
# counters after 5 s, dumps them 15 s later, and divides by the requests served in between
# (read from the proxy's `/status`). Exact to about 0.5 % run to run, so a change of 1 % can be
# told from noise, which wall-clock figures on this machine cannot. User space only. The dump
# is kept for `callgrind_annotate`. Needs valgrind, curl and python3; contacts only loopback.
# `--bin PATH` measures a saved profiling build instead of building the tree's (an A/B: copy
# `target/profiling/neurolink` aside before the change).
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v valgrind >/dev/null || { echo "valgrind is not on PATH (apt-get install valgrind)" >&2; exit 1; }
bin="$PWD/target/profiling/neurolink"
if [ "${1:-}" = "--bin" ]; then
  bin=$(realpath "${2:?--bin needs a path}")
  [ -x "$bin" ] || { echo "$bin is not an executable" >&2; exit 1; }
  shift 2
else
  cargo build -q --profile profiling -p neurolink-daemon --bin neurolink
fi
cargo build -q --release -p neurolink-tests --bin bench -p neurolink-daemon

work=$(mktemp -d)
cat > "$work/wrap.sh" <<WRAP
#!/usr/bin/env bash
exec valgrind --tool=callgrind --callgrind-out-file=$work/callgrind-%p.out "$bin" "\$@"
WRAP
chmod +x "$work/wrap.sh"

NEUROLINK_BIN="$work/wrap.sh" target/release/bench --soak 40 "$@" > "$work/bench.log" 2>&1 &
bench=$!
for _ in $(seq 1800); do grep -q "proxy pid" "$work/bench.log" && break; sleep 0.1; done
pid=$(sed -n 's/^proxy pid \([0-9]*\).*/\1/p' "$work/bench.log")
[ -n "$pid" ] || { cat "$work/bench.log" >&2; exit 1; }
port=$(ss -ltnp | grep "pid=$pid," | awk '{print $4}' | sed 's/.*://' | head -1)
served() {
  curl -s "http://127.0.0.1:$port/status" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["totals"]["successes"])'
}
sleep 5
before=$(served)
callgrind_control -z "$pid" > /dev/null
sleep 15
callgrind_control -d "$pid" > /dev/null
after=$(served)
wait "$bench"
dump=$(ls -t "$work"/callgrind-*.out.* | head -1)
total=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
requests=$((after - before))
echo "requests $requests, instructions $total, per request $((total / requests))"
echo "dump: $dump"
