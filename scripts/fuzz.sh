#!/usr/bin/env bash
# Builds the libFuzzer targets under fuzz/targets (one per decoder of untrusted bytes) with
# AddressSanitizer and runs them. Fails if any target finds a crash, a leak or a timeout.
#   scripts/fuzz.sh --each N    run every target for N seconds        (make fuzz)
#   scripts/fuzz.sh --total N   split N seconds over all targets      (make test; keep N ≤ 60)
# The project modules a target imports (Crypto, DeterministicRandom, Gossip, Learner) are built
# first, in dependency order, as instrumented static libraries; each is rebuilt only when its
# sources change. Needs swiftc with libFuzzer (Swift's Linux toolchain ships it; Debian's
# libclang-rt-14-dev provides the same runtime for clang), libsodium-dev, libuv1-dev,
# libopenblas-dev, zlib1g-dev, libdnnl-dev and pkg-config. Each target first replays, once each, the inputs
# in fuzz/regressions/TARGET/ (a crash file that was found and fixed goes there, so the fix stays
# tested), then fuzzes from three seed sources: the committed, minimised corpus in
# fuzz/corpus/TARGET/ (refresh it with `scripts/fuzz.sh --minimize`), the hex vectors of
# docs/wire.md, and the round-trip encodings the targets write from their own encoders at
# start-up (fuzz/support). New inputs go to fuzz/bin/corpus (not committed).
set -euo pipefail
cd "$(dirname "$0")/.."

mode="" seconds=""
case "${1:-}" in
  --each|--total) mode=$1; seconds=${2:?"usage: $0 --each N | --total N | --minimize"} ;;
  --minimize) mode=$1; seconds=0 ;;
  *) echo "usage: $0 --each N | --total N | --minimize" >&2; exit 2 ;;
esac

BIN=fuzz/bin
SWIFTC=${SWIFTC:-swiftc}
# Module search paths for the C modules every library below may pull in; openblas's header
# directory comes from pkg-config (Debian puts cblas.h in a per-variant directory).
CINCLUDES=(-I Sources/CSodium -I Sources/CLibUV -I Sources/CBLAS -I Sources/CZlib -I Sources/CDNNL -I Sources/CInference/include -I Sources/CPrefetch)
for f in $(pkg-config --cflags-only-I openblas); do CINCLUDES+=(-Xcc "$f"); done
FLAGS=(-parse-as-library -sanitize=fuzzer,address -O "${CINCLUDES[@]}" -I "$BIN")
SUPPORT=(fuzz/support/*.swift)
targets=()
for f in fuzz/targets/*.swift; do targets+=("$(basename "$f" .swift)"); done
mkdir -p "$BIN/artifacts"

newer() { # newer OUTPUT INPUT... : true if OUTPUT is missing or older than any input
  local out=$1; shift
  [ -e "$out" ] || return 0
  for f in "$@"; do [ "$f" -nt "$out" ] && return 0; done
  return 1
}

# The project's modules, in dependency order, built as instrumented static libraries with their
# .swiftmodule; deps: the project modules each imports; syslibs: the system libraries it links.
# Built one after another: on a loaded 2-core machine, building Gossip and Learner in parallel
# measured slower (103 s against 93 s from scratch).
modules=(Crypto DeterministicRandom Gossip Learner)
declare -A deps=([Crypto]="" [DeterministicRandom]="" [Gossip]="Crypto DeterministicRandom" [Learner]="DeterministicRandom")
declare -A syslibs=([Crypto]="-lsodium" [DeterministicRandom]="" [Gossip]="-luv -lz" [Learner]="$BIN/libCInference.a -lopenblas -lz -ldnnl -lgomp")
build_start=$SECONDS built=""
# Learner's C passes (CInference), a plain static library.
if newer "$BIN/libCInference.a" Sources/CInference/inference.c Sources/CInference/include/inference.h; then
  echo "fuzz: building CInference"
  clang -O2 -c Sources/CInference/inference.c -I Sources/CInference/include -o "$BIN/inference.o"
  ar rcs "$BIN/libCInference.a" "$BIN/inference.o"
  built+=" CInference"
fi
for m in "${modules[@]}"; do
  mapfile -t srcs < <(find "Sources/$m" -name '*.swift' | sort)
  inputs=("${srcs[@]}"); for d in ${deps[$m]}; do inputs+=("$BIN/lib$d.a"); done
  if newer "$BIN/lib$m.a" "${inputs[@]}"; then
    echo "fuzz: building $m with sanitizer coverage"
    "$SWIFTC" "${FLAGS[@]}" -emit-library -static -module-name "$m" "${srcs[@]}" \
      -emit-module -emit-module-path "$BIN/$m.swiftmodule" -o "$BIN/lib$m.a"
    built+=" $m"
  fi
done

# closure NAME...: the modules NAME... need with their dependencies, dependants first (the
# order a static link needs): the reverse of the dependency order above.
closure() {
  local want=" $* " changed=1 m d i
  while [ $changed = 1 ]; do
    changed=0
    for m in $want; do for d in ${deps[$m]}; do
      case "$want" in *" $d "*) ;; *) want+="$d "; changed=1 ;; esac
    done; done
  done
  for ((i = ${#modules[@]} - 1; i >= 0; i--)); do
    case "$want" in *" ${modules[i]} "*) echo "${modules[i]}" ;; esac
  done
}

for t in "${targets[@]}"; do
  src="fuzz/targets/$t.swift"
  # A target links the project modules it imports, and what those depend on.
  mapfile -t imported < <(sed -n 's/^import \([A-Za-z]*\)$/\1/p' "$src" | while read -r m; do
    [ -n "${deps[$m]+x}" ] && echo "$m"; done)
  libs=() links=()
  for m in $(closure "${imported[@]}"); do libs+=("$BIN/lib$m.a"); links+=(${syslibs[$m]}); done
  if newer "$BIN/$t" "$src" "${SUPPORT[@]}" "${libs[@]}"; then
    echo "fuzz: building $t"
    # gold warns about asan symbols it cannot export; harmless.
    "$SWIFTC" "${FLAGS[@]}" "$src" "${SUPPORT[@]}" "${libs[@]}" "${links[@]}" -o "$BIN/$t" 2> "$BIN/$t.build.log" \
      || { cat "$BIN/$t.build.log" >&2; exit 1; }
    built+=" $t"
  fi
done
[ -z "$built" ] || echo "fuzz: built$built in $((SECONDS - build_start))s"

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

# Each run also spends about a second outside -max_total_time (start-up, corpus loading, the
# exit leak check); under --total every target gets an equal share of what is left of the box,
# less that second, so the whole fuzzing pass stays within N seconds.
startup=1
fuzz_start=$SECONDS
# Decoders that only read paths get their input through scratch files here.
export TMPDIR="$BIN/tmp"
rm -rf "$TMPDIR"; mkdir -p "$TMPDIR"

failed=0
if [ "$mode" = "--minimize" ]; then
  # Merge what fuzzing found into the committed corpus, keeping only inputs that add coverage.
  for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "$BIN/corpus/$t"
    fresh="$BIN/minimized-$t"; rm -rf "$fresh"; mkdir -p "$fresh"
    "$BIN/$t" -merge=1 "$fresh" "fuzz/corpus/$t" "$BIN/corpus/$t" > "$BIN/$t.merge.log" 2>&1 \
      || { echo "fuzz: minimizing $t failed — see $BIN/$t.merge.log" >&2; exit 1; }
    rm -rf "fuzz/corpus/$t"; mv "$fresh" "fuzz/corpus/$t"
    echo "fuzz: $t corpus: $(ls "fuzz/corpus/$t" | wc -l) inputs"
  done
  exit 0
fi
for i in "${!targets[@]}"; do
  t=${targets[i]}
  log="$BIN/$t.log"
  regressions=(); [ -d "fuzz/regressions/$t" ] && mapfile -t regressions < <(find "fuzz/regressions/$t" -type f | sort)
  if [ "${#regressions[@]}" -gt 0 ]; then
    if ! "$BIN/$t" "${regressions[@]}" > "$BIN/$t.regressions.log" 2>&1; then
      echo "fuzz: $t FAILED on a recorded regression input — see $BIN/$t.regressions.log" >&2
      tail -30 "$BIN/$t.regressions.log" >&2
      failed=1
      continue
    fi
    echo "fuzz: $t replayed ${#regressions[@]} regression inputs"
  fi
  committed=(); [ -d "fuzz/corpus/$t" ] && committed=("fuzz/corpus/$t")
  if [ "$mode" = "--total" ]; then
    left=$(( seconds - (SECONDS - fuzz_start) ))
    per=$(( left / (${#targets[@]} - i) - startup )); [ "$per" -ge 1 ] || per=1
  else
    per=$seconds
  fi
  mkdir -p "$BIN/corpus/$t"
  # Targets with an LLVMFuzzerInitialize write round-trip seeds from their own encoders here.
  if FUZZ_SEED_DIR="$BIN/corpus/$t" "$BIN/$t" -max_total_time="$per" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
       -artifact_prefix="$BIN/artifacts/$t-" "$BIN/corpus/$t" "${committed[@]}" > "$log" 2>&1; then
    runs=$(grep -o 'Done [0-9]* runs' "$log" | tail -1 || true)
    echo "fuzz: $t ok (${per}s, ${runs:-no summary})"
  else
    echo "fuzz: $t FAILED — see $log and $BIN/artifacts/" >&2
    tail -30 "$log" >&2
    failed=1
  fi
done
rm -rf "$TMPDIR"
echo "fuzz: ${#targets[@]} targets in $((SECONDS - fuzz_start))s"
exit $failed
