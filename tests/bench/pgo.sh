#!/usr/bin/env bash
# A profile-guided build of `neurolink`: the release build, laid out and inlined by how the
# proxy's hot paths ran in a training load. A quarter less user CPU per request, a third less
# on a request that wakes an idle proxy (BENCHMARKS.md, "ninth session").
#
#   tests/bench/pgo.sh [--install]          # from anywhere in the workspace
#
# 1. builds an instrumented binary (target/pgo/gen),
# 2. runs `bench --train` with it three times: plain HTTP upstream with an API key, HTTPS
#    (HTTP/2) upstream with an API key, HTTPS with a subscription login, each with requests
#    shaped like Claude Code's among the bench's own; only the bench's fake upstreams on
#    loopback, never a real provider,
# 3. merges the profiles with llvm-profdata (rustup's llvm-tools component, added if missing;
#    or $LLVM_PROFDATA, which must match rustc's LLVM version),
# 4. builds the optimised binary with them: target/pgo/neurolink. `--install` copies it to
#    ~/.cargo/bin (where `cargo install --path daemon` puts the plain one).
#
# Two release builds of the proxy and one of the bench: about 11 minutes on two cores (a fresh
# clone, measured). The proxy's builds use their own target folders, so the normal
# `target/release` is left as it is.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
out=$root/target/pgo
install=false
for arg in "$@"; do
  case $arg in
    --install) install=true ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "pgo.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

# llvm-profdata must match the compiler's LLVM: rustup's llvm-tools, or $LLVM_PROFDATA.
host=$(rustc -vV | sed -n 's/^host: //p')
profdata=${LLVM_PROFDATA:-$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata}
if [ ! -x "$profdata" ] && [ -z "${LLVM_PROFDATA:-}" ]; then
  command -v rustup >/dev/null || {
    echo "pgo.sh: needs llvm-profdata of rustc's LLVM ($(rustc -vV | sed -n 's/^LLVM version: //p')):" \
      "install rustup's llvm-tools, or set LLVM_PROFDATA" >&2
    exit 1
  }
  echo "pgo.sh: adding rustup's llvm-tools component (for llvm-profdata)..." >&2
  rustup component add llvm-tools-preview
fi
[ -x "$profdata" ] || { echo "pgo.sh: $profdata is missing or not executable" >&2; exit 1; }

rm -rf "$out/data" "$out/neurolink.profdata"
mkdir -p "$out/data"

echo "pgo.sh: 1/4 the instrumented build (target/pgo/gen)..." >&2
RUSTFLAGS="-Cprofile-generate=$out/data" \
  cargo build --release -p neurolink-daemon --bin neurolink --target-dir "$out/gen"

echo "pgo.sh: 2/4 the training runs..." >&2
for mode in "" "--tls" "--tls --oauth"; do
  echo "pgo.sh:   bench --train $mode" >&2
  # `cargo run` finds the bench wherever the target folder is (CARGO_TARGET_DIR).
  # shellcheck disable=SC2086 # the mode is two words or none
  NEUROLINK_BIN=$out/gen/release/neurolink \
    cargo run -q --release -p neurolink-tests --bin bench -- --train $mode
done
ls "$out"/data/*.profraw >/dev/null 2>&1 || { echo "pgo.sh: the training wrote no profile" >&2; exit 1; }

echo "pgo.sh: 3/4 merging the profiles..." >&2
"$profdata" merge -o "$out/neurolink.profdata" "$out/data"

echo "pgo.sh: 4/4 the optimised build (target/pgo/use)..." >&2
RUSTFLAGS="-Cprofile-use=$out/neurolink.profdata" \
  cargo build --release -p neurolink-daemon --bin neurolink --target-dir "$out/use"
cp "$out/use/release/neurolink" "$out/neurolink"
echo "pgo.sh: built $out/neurolink" >&2
if $install; then
  dest=${CARGO_HOME:-$HOME/.cargo}/bin
  mkdir -p "$dest"
  # Copied beside and renamed over: a running service keeps its old binary instead of failing
  # the copy with "text file busy".
  cp "$out/neurolink" "$dest/.neurolink.pgo.tmp"
  mv -f "$dest/.neurolink.pgo.tmp" "$dest/neurolink"
  echo "pgo.sh: installed $dest/neurolink" >&2
fi
