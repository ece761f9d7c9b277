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

# netsim beside a vectorised numpy/scipy push-sum doing the same arithmetic, in this run:
# wall time of the whole command as a user runs it, peak memory, and the ratio.
mkdir -p .build/bench-netsim
python3 - "$BIN/netsim" bench-results.jsonl <<'EOF_NETSIM'
import json, subprocess, sys, time, os
netsim, results = sys.argv[1], sys.argv[2]

def timed(cmd):
    """Wall seconds and peak RSS (bytes) of one command (GNU time's %M)."""
    start = time.monotonic()
    proc = subprocess.run(["/usr/bin/time", "-f", "peak %M", "-o", ".build/bench-netsim/time.txt"] + cmd,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr}")
    peak = int(open(".build/bench-netsim/time.txt").read().split()[-1]) * 1024
    return time.monotonic() - start, peak

def numpy(nodes, dim, rounds):
    out = subprocess.run([sys.executable, "scripts/numpy_pushsum.py", "--nodes", str(nodes), "--dimension", str(dim),
                          "--rounds", str(rounds), "--metrics-every", "10"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])

print("\n== netsim ==")
figures = []
for nodes, dim, rounds in [(10_000, 7_850, 100), (100_000, 100, 200)]:
    base = numpy(nodes, dim, rounds)
    seconds, peak = timed([netsim, "average", "--nodes", str(nodes), "--dimension", str(dim), "--rounds", str(rounds), "--metrics-every", "10"])
    rate = nodes * rounds / seconds
    ratio = seconds / base["seconds"]
    name = f"netsim average {nodes} nodes x {dim} x {rounds} rounds (wall)"
    note = (f"{rate:,.0f} node-rounds/s, peak {peak / 2**20:,.0f} MiB; numpy/scipy {base['seconds']:.1f} s, "
            f"peak {base['peak_rss_bytes'] / 2**20:,.0f} MiB ({base['library']}); target within 2x")
    print(f"{name}   {seconds:.1f} s   baseline {base['seconds']:.1f} s   ratio {ratio:.1f}x   ({note})")
    figures.append({"suite": "netsim", "name": name, "value": seconds, "unit": "s", "baseline": base["seconds"], "ratio": ratio, "note": note})

# The protocol's own peer sampling: full GossipNodes (Cyclon views, membership), 10-element vectors.
nodes = int(os.environ.get("NETSIM_BENCH_SAMPLED_NODES", "100000"))
scenario = ".build/bench-netsim/sampled.toml"
with open(scenario, "w") as f:
    f.write(f'seed = 1\nrounds = 20\n[nodes]\ncount = {nodes}\ndimension = 10\n[topology]\nkind = "sampling"\n'
            '[links]\nloss = 0.01\n[metrics]\nevery = 10\n')
out = f".build/bench-netsim/sampled-{int(time.time())}"
seconds, peak = timed([netsim, "run", scenario, "--out", out, "--quiet"])
name = f"netsim run, {nodes} nodes over Cyclon peer sampling, 20 rounds (wall)"
note = (f"peak memory {peak / 2**30:.2f} GiB ({peak / nodes / 1000:.1f} KB per node, so about {peak / nodes * 1e6 / 2**30:.1f} GiB "
        f"for 1,000,000; NETSIM_BENCH_SAMPLED_NODES=1000000 runs it); {nodes * 20 / seconds:,.0f} node-rounds/s; target: 1,000,000 nodes under 16 GiB")
print(f"{name}   {seconds:.1f} s   ({note})")
figures.append({"suite": "netsim", "name": name, "value": seconds, "unit": "s", "baseline": None, "ratio": None, "note": note})
with open(results, "a") as f:
    for fig in figures:
        f.write(json.dumps(fig, sort_keys=True) + "\n")
EOF_NETSIM
