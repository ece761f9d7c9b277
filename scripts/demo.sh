#!/usr/bin/env bash
# Demo: two identities and a network key in a temporary directory, two `peer` processes on
# loopback that run the secret handshake over TCP (libuv) and exchange one signed, encrypted
# model delta in each direction; then five `peer join` nodes on loopback that find each other
# and average their vectors to the exact weighted mean, shown by `peer status`; then push-sum
# averaging of simulated nodes under heavy loss, exact and plain. Uses the release binaries
# built by `make build`.
set -euo pipefail
cd "$(dirname "$0")/.."
PEER=${PEER:-.build/release/peer}
[ -x "$PEER" ] || { echo "demo: $PEER not found; run 'make build' first" >&2; exit 1; }

work=$(mktemp -d)
listener_pid=""
node_pids=()
cleanup() {
  if [ -n "$listener_pid" ]; then kill "$listener_pid" 2>/dev/null || true; fi
  for pid in "${node_pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# Prints the port a listener announced in LOG, waiting up to 10 s for the line.
listening_port() {
  local p=""
  for _ in $(seq 1 100); do
    p=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$1" 2>/dev/null || true)
    [ -n "$p" ] && break
    sleep 0.1
  done
  echo "$p"
}

echo "== keys (in $work)"
"$PEER" keygen --dir "$work/alice"
"$PEER" keygen --dir "$work/bob"
"$PEER" network-key new --out "$work/network.key"
ALICE_ID=$("$PEER" id --quiet --dir "$work/alice")
ls -l "$work/alice/identity.key" "$work/network.key" | awk '{print "   " $1 "  " $NF}'

echo "== a key file that others can read is refused"
cp -p "$work/network.key" "$work/open.key" && chmod 644 "$work/open.key"
"$PEER" exchange --listen 127.0.0.1:0 --dir "$work/alice" --network-key "$work/open.key" 2>&1 | sed 's/^/   /' || true

echo "== exchange over TCP on 127.0.0.1"
"$PEER" exchange --listen 127.0.0.1:0 --dir "$work/alice" --network-key "$work/network.key" > "$work/alice.log" 2>&1 &
listener_pid=$!
port=$(listening_port "$work/alice.log")
[ -n "$port" ] || { cat "$work/alice.log"; echo "demo: listener did not start" >&2; exit 1; }

"$PEER" exchange --connect "127.0.0.1:$port" --peer "$ALICE_ID" --dir "$work/bob" --network-key "$work/network.key" \
  > "$work/bob.log" 2>&1 || { cat "$work/alice.log" "$work/bob.log"; exit 1; }
wait "$listener_pid" || { cat "$work/alice.log" "$work/bob.log"; exit 1; }
listener_pid=""
sed 's/^/   /' "$work/alice.log"
sed 's/^/   /' "$work/bob.log"

echo "== a peer without the network key gets no reply"
"$PEER" network-key new --out "$work/other.key" > /dev/null 2>&1
"$PEER" exchange --listen 127.0.0.1:0 --dir "$work/alice" --network-key "$work/network.key" --timeout 5 > "$work/alice2.log" 2>&1 &
listener_pid=$!
port=$(listening_port "$work/alice2.log")
"$PEER" exchange --connect "127.0.0.1:$port" --peer "$ALICE_ID" --dir "$work/bob" --network-key "$work/other.key" --timeout 5 2>&1 | sed 's/^/   /' || true
wait "$listener_pid" 2>/dev/null || true
listener_pid=""
sed 's/^/   /' "$work/alice2.log"
echo "== five real peers on loopback: peer join, bootstrapped to the first; averaging 3-element vectors"
mean=$(python3 -c 'print(", ".join("%.6f" % (sum((i*10+k)*(i+1) for i in range(5))/15) for k in range(3)))')
for i in 0 1 2 3 4; do
  printf '%s\n' "$((i*10)),$((i*10+1)),$((i*10+2))" > "$work/v$i.txt"
  boot=(); [ "$i" -gt 0 ] && boot=(--bootstrap "127.0.0.1:$first")
  "$PEER" join --dir "$work/n$i" --network-key "$work/network.key" --listen 127.0.0.1:0 --data-dir "$work/d$i" \
    --profile local --vector "$work/v$i.txt" --samples $((i + 1)) "${boot[@]}" > "$work/n$i.out" 2> "$work/n$i.log" &
  node_pids+=($!)
  port=$(listening_port "$work/n$i.log")
  [ -n "$port" ] || { cat "$work/n$i.log"; echo "demo: node $i did not start" >&2; exit 1; }
  [ "$i" -eq 0 ] && first=$port
done
echo "   weighted mean of the inputs: $mean"
sleep 6
"$PEER" status --data-dir "$work/d4" | sed 's/^/   /'
for i in 0 1 2 3 4; do "$PEER" leave --data-dir "$work/d$i" > /dev/null 2>&1 || true; done
for pid in "${node_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
node_pids=()
echo "== push-sum averaging of 300 simulated nodes with 30% message loss (netsim, virtual time)"
NETSIM=${NETSIM:-.build/release/netsim}
echo "   acknowledged transfers (exact):"
"$NETSIM" average --nodes 300 --loss 0.3 --seed 1 --rounds 150 2>/dev/null | awk -F, 'NR==1 || NR%30==1 {printf "     %-6s %-7s %-24s %s\n", $1, $2, $3, $4}'
echo "   plain push-sum (a lost message loses its mass):"
"$NETSIM" average --nodes 300 --loss 0.3 --seed 1 --rounds 150 --plain 2>/dev/null | awk -F, 'NR==1 || NR%30==1 {printf "     %-6s %-7s %-24s %s\n", $1, $2, $3, $4}'
echo "demo: done"
