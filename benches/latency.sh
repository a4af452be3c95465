#!/usr/bin/env bash
# Open latency: the time from the client's last knock to the first TCP
# connect to port 22 that succeeds, over ROUNDS rounds (default 50), for
#   knockd            Debian's knockd, `command = iptables -I INPUT ...`
#   knock-rs command  ours (release `knockd` example), the same command door
#   knock-rs iptables ours, native iptables door (`firewall = iptables`)
#   knock-rs nftables ours, native nftables door (`firewall = nftables`)
#
#   sudo benches/latency.sh [ROUNDS]
#   sudo GAP_MS=0 benches/latency.sh 50      # the knocks back to back, as
#                                            # a client sends them
#   sudo BASELINE=/tmp/knockd-old benches/latency.sh 50
#                                 # also another build of ours (a copy of an
#                                 # earlier target/release/examples/knockd),
#                                 # nftables door, right after this build's
#
# Each round knocks 7000,8000,9000 (TCP SYNs, GAP_MS apart, default 20)
# from its own client address (198.18.1.<round>), so every round starts
# closed. The clock starts just before the SYN to 9000 is sent; then the
# client tries a fresh non-blocking connect to 198.18.0.1:22 every 0.2 ms
# (a dropped SYN is not retransmitted for a second, so each try is a new
# socket) until one completes. Resolution: about 0.2 ms plus Python's
# overhead per try.
# Namespaces are created here (198.18.0.0/15 only) and removed on exit.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
ROUNDS=${1:-50}
GAP_MS=${GAP_MS:-20}
DEBIAN_KNOCKD=${DEBIAN_KNOCKD:-/usr/sbin/knockd}
[ "$(id -u)" -eq 0 ] || { echo "needs root (namespaces)" >&2; exit 1; }
[ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 250 ] || { echo "ROUNDS: 1..250" >&2; exit 1; }

cargo build --quiet --release --example knockd
OURS=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/knockd
IPT=$(command -v iptables)

S=klat-srv-$$
C=klat-cli-$$
WORK=$(mktemp -d /tmp/latency.XXXXXX)
DPID=
LPID=
cleanup() {
  [ -n "$DPID" ] && kill -9 "$DPID" 2>/dev/null || true
  if [ -n "$LPID" ]; then
    kill -9 "$LPID" 2>/dev/null || true
    wait "$LPID" 2>/dev/null || true
  fi
  ip netns del "$S" 2>/dev/null || true
  ip netns del "$C" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

ip netns add "$S"
ip netns add "$C"
ip -n "$S" link set lo up
ip -n "$C" link set lo up
ip -n "$S" link add kn0 type veth peer name kn1 netns "$C"
ip -n "$S" addr add 198.18.0.1/15 dev kn0
ip -n "$C" addr add 198.18.0.2/15 dev kn1
for i in $(seq "$ROUNDS"); do
  ip -n "$C" addr add "198.18.1.$i/15" dev kn1
done
ip -n "$S" link set kn0 up
ip -n "$C" link set kn1 up

# The service: accept and close, forever (killed on exit).
ip netns exec "$S" python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 22)); s.listen(1024)
while True: s.accept()[0].close()' &
LPID=$!

CLIENT=$(cat <<'PY'
import errno, select, socket, statistics, sys, time
rounds = int(sys.argv[1])
gap = float(sys.argv[2]) / 1000
SERVER = "198.18.0.1"
def syn(src, port):
    s = socket.socket(); s.bind((src, 0)); s.setblocking(False)
    s.connect_ex((SERVER, port)); return s
lat = []
for r in range(1, rounds + 1):
    src = f"198.18.1.{r}"
    for p in (7000, 8000):
        syn(src, p).close(); time.sleep(gap)
    t0 = time.perf_counter()
    syn(src, 9000).close()
    deadline = t0 + 5
    ok = False
    while time.perf_counter() < deadline:
        s = socket.socket(); s.bind((src, 0)); s.setblocking(False)
        s.connect_ex((SERVER, 22))
        _, w, _ = select.select([], [s], [], 0.0002)
        if w and s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
            lat.append((time.perf_counter() - t0) * 1000); ok = True
        s.close()
        if ok: break
    if not ok:
        print(f"round {r}: no open within 5 s", file=sys.stderr)
    time.sleep(0.02)
if not lat:
    print("| - | - | 0 |"); sys.exit()
print(f"| {statistics.median(lat):.3f} | {max(lat):.3f} | {len(lat)}/{rounds} |")
PY
)

capturing() { [ "$(wc -l <"/proc/$1/net/packet" 2>/dev/null || echo 0)" -gt 1 ]; }

# run NAME BINARY CONF_BODY
run() {
  local name=$1 bin=$2
  printf '%s\n' "$3" >"$WORK/knockd.conf"
  ip netns exec "$S" "$IPT" -F INPUT
  ip netns exec "$S" nft delete table inet knock 2>/dev/null || true
  rm -f "$WORK/engine.state" # no grant held over from the run before
  if [ "$4" = guard ]; then
    ip netns exec "$S" "$IPT" -A INPUT -p tcp --dport 22 -j DROP
  fi
  if [ "$bin" = "$DEBIAN_KNOCKD" ]; then
    ip netns exec "$S" "$bin" -c "$WORK/knockd.conf" -i kn0 >"$WORK/d.out" 2>&1 &
  else
    ip netns exec "$S" "$bin" -c "$WORK/knockd.conf" -i kn0 --state-dir "$WORK" \
      >"$WORK/d.out" 2>&1 &
  fi
  DPID=$!
  for _ in $(seq 200); do capturing "$DPID" && break; sleep 0.05; done
  capturing "$DPID" || { echo "$name did not start: $(cat "$WORK/d.out")" >&2; exit 1; }
  sleep 0.3
  if ip netns exec "$C" python3 -c 'import socket,sys; socket.create_connection(("198.18.0.1",22),0.3)' 2>/dev/null; then
    echo "$name: tcp/22 open before knocking" >&2; exit 1
  fi
  local row
  row=$(ip netns exec "$C" python3 -c "$CLIENT" "$ROUNDS" "$GAP_MS")
  echo "| $name $row"
  kill -TERM "$DPID"
  for _ in $(seq 50); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$DPID" 2>/dev/null || true
  wait "$DPID" 2>/dev/null || true
  DPID=
}

CMD_DOOR="[openSSH]
    sequence    = 7000,8000,9000
    seq_timeout = 30
    tcpflags    = syn
    command     = $IPT -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT"
native() {
  printf '[openSSH]\n    sequence    = 7000,8000,9000\n    seq_timeout = 30\n    tcpflags    = syn\n    open        = tcp/22\n    firewall    = %s\n    cmd_timeout = 600\n' "$1"
}

echo "| daemon, sink | median ms | max ms | opened |"
echo "|---|---:|---:|---:|"
run "knockd, iptables command" "$DEBIAN_KNOCKD" "$CMD_DOOR" guard
run "knock-rs, iptables command" "$OURS" "$CMD_DOOR" guard
run "knock-rs, native iptables" "$OURS" "$(native iptables)" guard
run "knock-rs, native nftables" "$OURS" "$(native nftables)" noguard
if [ -n "${BASELINE:-}" ]; then
  run "knock-rs baseline, native nftables" "$BASELINE" "$(native nftables)" noguard
fi
