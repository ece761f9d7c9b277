#!/usr/bin/env bash
# The product's demo: eight real `peer join` processes on loopback, each holding its own
# non-IID (Dirichlet 0.5) part of Fashion-MNIST, train one softmax model together by
# stochastic gradient push, through `netsim relay`, which loses 10 % of their datagrams and
# delays everything by 5 ± 5 ms. A live table shows each peer's test accuracy, training rounds,
# bytes and known peers; at the end every peer's accuracy stands beside a model trained
# centrally on all the data, and a plot of accuracy over time is written as SVG. Uses the
# release binaries built by `make build`.
#
#   DEMO_SECONDS   how long the peers train (default 90)
#   DEMO_OUT       where the plot and the accuracy log go (default .build/demo)
set -euo pipefail
cd "$(dirname "$0")/.."
PEER=${PEER:-.build/release/peer}
NETSIM=${NETSIM:-.build/release/netsim}
SECONDS_TO_TRAIN=${DEMO_SECONDS:-90}
OUT=${DEMO_OUT:-.build/demo}
PEERS=8
for tool in "$PEER" "$NETSIM"; do
  [ -x "$tool" ] || { echo "demo: $tool not found; run 'make build' first" >&2; exit 1; }
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

work=$(mktemp -d)
pids=()
relay_pid=""
cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  if [ -n "$relay_pid" ]; then kill -9 "$relay_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# Ports: peers on BASE+i, the relay's side of each link on BASE+10+i.
BASE=$((21000 + ($$ % 500) * 20))

echo "== a model trained centrally on all 60,000 images, the reference (peer train, 3 epochs)"
"$PEER" train --data fashion-mnist --model softmax --epochs 3 --normalize standardize --lr 0.1 --momentum 0 \
  --out "$work/central.model" 2> "$work/central.log"
central=$(sed -n 's/^test accuracy \([0-9.]*\) after.*/\1/p' "$work/central.log")
[ -n "$central" ] || { cat "$work/central.log"; echo "demo: central training failed" >&2; exit 1; }
echo "   central test accuracy: $central"

echo "== netsim relay: 10 % datagram loss, 5 ± 5 ms on every path"
links=()
for i in $(seq 0 $((PEERS - 1))); do links+=(--link "127.0.0.1:$((BASE + 10 + i))=127.0.0.1:$((BASE + i))"); done
"$NETSIM" relay "${links[@]}" --loss 0.1 --latency 5 --jitter 5 --seed 1 > "$work/relay.json" 2> "$work/relay.log" &
relay_pid=$!
for _ in $(seq 1 100); do grep -q "127.0.0.1:$((BASE + 10 + PEERS - 1)) -> " "$work/relay.log" 2>/dev/null && break; sleep 0.1; done

echo "== eight peers join, each with its own non-IID part of Fashion-MNIST"
"$PEER" network-key new --out "$work/network.key" > /dev/null 2>&1
for i in $(seq 0 $((PEERS - 1))); do
  boot=(); [ "$i" -gt 0 ] && boot=(--bootstrap "127.0.0.1:$((BASE + 10))")
  "$PEER" join --dir "$work/k$i" --network-key "$work/network.key" --listen "127.0.0.1:$((BASE + i))" \
    --advertise "127.0.0.1:$((BASE + 10 + i))" --data-dir "$work/d$i" --profile local --no-beacons "${boot[@]}" \
    --data fashion-mnist --model softmax --partition dirichlet:0.5 --peer-index "$i" --peers "$PEERS" \
    --schedule cosine:$((SECONDS_TO_TRAIN * 4)) --eval-interval 3 > /dev/null 2> "$work/peer$i.log" &
  pids+=($!)
done
for i in $(seq 0 $((PEERS - 1))); do
  for _ in $(seq 1 300); do [ -S "$work/d$i/control.sock" ] && break; sleep 0.1; done
  [ -S "$work/d$i/control.sock" ] || { cat "$work/peer$i.log"; echo "demo: peer $i did not start" >&2; exit 1; }
  sed -n 's/^training \(.*\) on \([0-9]*\) samples.*/   peer '"$i"': \2 training images/p' "$work/peer$i.log"
done

# One status line per peer: accuracy, rounds, bytes sent/received, peers known (from --json).
table() {
  python3 - "$work" "$PEERS" "$1" "$OUT/accuracy.csv" <<'EOF'
import json, os, subprocess, sys
work, peers, elapsed, log = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
rows = []
for i in range(peers):
    try:
        out = subprocess.run([os.environ["PEER_BIN"], "status", "--json", "--data-dir", f"{work}/d{i}"],
                             capture_output=True, text=True, timeout=5).stdout
        s = json.loads(out)
    except Exception:
        rows.append((i, None, 0, 0, 0, 0)); continue
    l = s.get("learning", {})
    alive = sum(1 for m in s.get("members", []) if m.get("state") == "alive")
    rows.append((i, l.get("accuracy"), l.get("rounds", 0), l.get("bytes_sent", 0), l.get("bytes_received", 0), alive))
print(f"   t = {elapsed:5.0f} s   peer  accuracy  rounds  sent MB  recv MB  peers known")
with open(log, "a") as f:
    for i, acc, rounds, sent, recv, alive in rows:
        shown = f"{acc:8.4f}" if acc is not None else "       -"
        print(f"                  {i:4d}  {shown}  {rounds:6d}  {sent/1e6:7.1f}  {recv/1e6:7.1f}  {alive:11d}")
        if acc is not None: f.write(f"{elapsed:.1f},{i},{acc}\n")
EOF
}
export PEER_BIN="$PEER"
echo "time_seconds,peer,accuracy" > "$OUT/accuracy.csv"
echo "== training together for $SECONDS_TO_TRAIN s (test accuracy on 2,000 test images, every 3 s)"
start=$(date +%s)
# On a terminal the table is redrawn in place; in a log, printed every 15 s.
live=0; [ -t 1 ] && live=1
drawn=0
while true; do
  elapsed=$(( $(date +%s) - start ))
  if [ "$live" = 1 ]; then
    block=$(table "$elapsed")
    [ "$drawn" = 1 ] && printf '\033[%dA\033[J' "$((PEERS + 1))"
    printf '%s\n' "$block"
    drawn=1
  elif [ $((elapsed % 15)) -lt 3 ]; then
    table "$elapsed"
  else
    table "$elapsed" > /dev/null
  fi
  [ "$elapsed" -ge "$SECONDS_TO_TRAIN" ] && break
  sleep 3
done

python3 - "$OUT/accuracy.csv" <<'EOF2'
import csv, sys
latest, reached = {}, None
for row in csv.DictReader(open(sys.argv[1])):
    latest[row["peer"]] = float(row["accuracy"])
    if reached is None and len(latest) == 8 and min(latest.values()) >= 0.80:
        reached = float(row["time_seconds"])
print(f"   every peer at 0.80 or more (2,000 test images) after {reached:.0f} s" if reached is not None
      else "   not every peer reached 0.80 in this run")
EOF2
echo "== every peer's model on all 10,000 test images, beside the central one ($central)"
for i in $(seq 0 $((PEERS - 1))); do
  acc=$("$PEER" predict --data-dir "$work/d$i" --input fashion-mnist --summary-only 2>&1 | sed -n 's/^accuracy \([0-9.]*\).*/\1/p')
  echo "   peer $i: $acc   (central $central)"
done
for i in $(seq 0 $((PEERS - 1))); do "$PEER" leave --data-dir "$work/d$i" > /dev/null 2>&1 || true; done
for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
pids=()
kill -TERM "$relay_pid" 2>/dev/null || true
wait "$relay_pid" 2>/dev/null || true
relay_pid=""
python3 - "$work/relay.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"   the relay carried {r.get('datagrams', 0)} datagrams and dropped {100 * r.get('dropRate', 0):.1f} % of them; {r.get('tcpConnections', 0)} TCP sessions")
EOF

python3 - "$OUT/accuracy.csv" "$OUT/accuracy.svg" "$central" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
central = float(sys.argv[3])
W, H, L, B, T, R = 720, 400, 60, 40, 30, 20
tmax = max([float(r["time_seconds"]) for r in rows] + [1])
lo = 0.5
x = lambda t: L + (W - L - R) * t / tmax
y = lambda a: T + (H - T - B) * (1 - (max(a, lo) - lo) / (1 - lo))
colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{W/2}" y="18" text-anchor="middle">Test accuracy of eight peers training together (10 % datagram loss) beside central training</text>']
for a in [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]:
    out.append(f'<line x1="{L}" x2="{W-R}" y1="{y(a)}" y2="{y(a)}" stroke="#ddd"/><text x="{L-6}" y="{y(a)+4}" text-anchor="end">{a:.1f}</text>')
for t in range(0, int(tmax) + 1, max(10, int(tmax) // 6 // 10 * 10 or 10)):
    out.append(f'<text x="{x(t)}" y="{H-B+16}" text-anchor="middle">{t}</text>')
out.append(f'<text x="{W/2}" y="{H-6}" text-anchor="middle">seconds</text>')
out.append(f'<line x1="{L}" x2="{W-R}" y1="{y(central)}" y2="{y(central)}" stroke="black" stroke-dasharray="6 4"/>')
out.append(f'<text x="{W-R}" y="{y(central)-6}" text-anchor="end">central {central:.3f}</text>')
for p in sorted({int(r["peer"]) for r in rows}):
    pts = " ".join(f'{x(float(r["time_seconds"])):.1f},{y(float(r["accuracy"])):.1f}' for r in rows if int(r["peer"]) == p)
    out.append(f'<polyline fill="none" stroke="{colors[p % len(colors)]}" stroke-width="1.5" points="{pts}"/>')
    out.append(f'<text x="{L+10+80*p}" y="{H-B-8}" fill="{colors[p % len(colors)]}">peer {p}</text>')
out.append("</svg>")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
EOF
echo "== accuracy over time: $OUT/accuracy.svg (data: $OUT/accuracy.csv)"
echo "demo: done"
