#!/usr/bin/env bash
# Runs every benchmark; each prints a table and appends JSON lines to bench-results.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.build/release
"$BIN/murmur-bench" all

# The real 8-peer run (the demo): seconds until every peer's accuracy reached 0.80.
mkdir -p .build/bench-peers
DEMO_OUT=.build/bench-peers scripts/demo.sh > .build/bench-peers/demo.log 2>&1 || true
python3 - .build/bench-peers/demo.log bench-results.jsonl <<'EOF'
import json, re, sys
log = open(sys.argv[1]).read()
match = re.search(r"every peer at 0.80 or more \(2,000 test images\) after (\d+) s", log)
central = re.search(r"central test accuracy: ([0-9.]+)", log)
finals = [float(x) for x in re.findall(r"peer \d: ([0-9.]+)   \(central", log)]
seconds = float(match.group(1)) if match else None
note = (f"8 peers, Dirichlet(0.5) parts, 10 % datagram loss through netsim relay; final mean {sum(finals)/len(finals):.4f} "
        f"on 10,000 images against central {central.group(1) if central else '?'}") if finals else "the demo failed: see .build/bench-peers/demo.log"
print("\n== peers ==")
print(f"real 8-peer run: time until every peer reached 0.80   {seconds if seconds is not None else 'not reached'} s   ({note})")
with open(sys.argv[2], "a") as out:
    out.write(json.dumps({"suite": "peers", "name": "real 8-peer run: time until every peer reached 0.80", "value": seconds,
                          "unit": "s", "baseline": None, "ratio": None, "note": note}, sort_keys=True) + "\n")
EOF
