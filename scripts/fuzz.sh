#!/usr/bin/env bash
# Builds the libFuzzer targets under fuzz/targets (one per decoder) with AddressSanitizer and
# runs them. Fails if any target finds a crash, a leak or a timeout.
#   scripts/fuzz.sh --each N    run every target for N seconds        (make fuzz)
#   scripts/fuzz.sh --total N   split N seconds over all targets      (make test; keep N ≤ 60)
# Needs swiftc with libFuzzer (Swift's Linux toolchain ships it; Debian's libclang-rt-14-dev
# provides the same runtime for clang) and libsodium-dev. Seed corpora are generated from the
# hex vectors of docs/wire.md into fuzz/bin/corpus (not committed).
set -euo pipefail
cd "$(dirname "$0")/.."

mode="" seconds=""
case "${1:-}" in
  --each|--total) mode=$1; seconds=${2:?"usage: $0 --each N | --total N"} ;;
  *) echo "usage: $0 --each N | --total N" >&2; exit 2 ;;
esac

BIN=fuzz/bin
SWIFTC=${SWIFTC:-swiftc}
FLAGS=(-parse-as-library -sanitize=fuzzer,address -O -I Sources/CSodium)
targets=()
for f in fuzz/targets/*.swift; do targets+=("$(basename "$f" .swift)"); done
mkdir -p "$BIN/artifacts"

newer() { # newer OUTPUT INPUT... : true if OUTPUT is missing or older than any input
  local out=$1; shift
  [ -e "$out" ] || return 0
  for f in "$@"; do [ "$f" -nt "$out" ] && return 0; done
  return 1
}

if newer "$BIN/libCrypto.a" Sources/Crypto/*.swift; then
  echo "fuzz: building Crypto with sanitizer coverage"
  "$SWIFTC" "${FLAGS[@]}" -emit-library -static -module-name Crypto Sources/Crypto/*.swift \
    -emit-module -emit-module-path "$BIN/Crypto.swiftmodule" -o "$BIN/libCrypto.a"
fi
for t in "${targets[@]}"; do
  if newer "$BIN/$t" "fuzz/targets/$t.swift" "$BIN/libCrypto.a"; then
    echo "fuzz: building $t"
    # gold warns about asan symbols it cannot export; harmless.
    "$SWIFTC" "${FLAGS[@]}" -I "$BIN" "fuzz/targets/$t.swift" "$BIN/libCrypto.a" -lsodium -o "$BIN/$t" 2> "$BIN/$t.build.log" \
      || { cat "$BIN/$t.build.log" >&2; exit 1; }
  fi
done

# Seed corpora from the documented vectors.
python3 - "$BIN/corpus" <<'PY'
import os, re, sys
root = sys.argv[1]
text = open("docs/wire.md").read()
vec, cur = {}, None
for line in text.splitlines():
    m = re.match(r"^([a-z0-9_.]+\.[a-z0-9_.]+):\s*$", line)
    if m: cur = m.group(1); vec[cur] = ""; continue
    if cur and re.match(r"^ +[0-9a-f ]+$", line): vec[cur] += line.strip(); continue
    cur = None
v = {k: bytes.fromhex(h) for k, h in vec.items()}
seeds = {
    "handshake_frame": [bytes([i]) + v[f"handshake.msg{i % 4 + 1}"] for i in range(4)]
        + [bytes([(i + 3) % 4]) + v[f"handshake.msg{i + 1}"] for i in range(4)],
    "datagram": [v["datagram.sealed"]],
    "delta_envelope": [v["delta.envelope"], v["delta.header"]],
    "delta_chunk": [v["delta.chunk"]],
    "channel_frame": [v["stream.header"] + v["stream.frame1"] + v["stream.frame2"]],
}
for target, items in seeds.items():
    d = os.path.join(root, target); os.makedirs(d, exist_ok=True)
    for i, b in enumerate(items):
        open(os.path.join(d, f"seed-{i}"), "wb").write(b)
PY

if [ "$mode" = "--total" ]; then
  per=$(( seconds / ${#targets[@]} )); [ "$per" -ge 1 ] || per=1
else
  per=$seconds
fi

failed=0
for t in "${targets[@]}"; do
  log="$BIN/$t.log"
  if "$BIN/$t" -max_total_time="$per" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
       -artifact_prefix="$BIN/artifacts/$t-" "$BIN/corpus/$t" > "$log" 2>&1; then
    runs=$(grep -o 'Done [0-9]* runs' "$log" | tail -1 || true)
    echo "fuzz: $t ok (${per}s, ${runs:-no summary})"
  else
    echo "fuzz: $t FAILED — see $log and $BIN/artifacts/" >&2
    tail -30 "$log" >&2
    failed=1
  fi
done
exit $failed
