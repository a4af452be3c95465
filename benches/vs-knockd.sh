#!/usr/bin/env bash
# Debian's knockd vs ours (the `knockd` example, release build) on the same
# flood: N first knocks from N spoofed sources (100.64.0.0/10) to the door's
# first port, then the real sequence 7000,8000,9000 from 198.18.0.2, written
# by the `floodgen` example and replayed with `tcpreplay --topspeed` into the
# client end of a veth whose server end (kn0) the daemon captures on.
#
#   sudo benches/vs-knockd.sh                 # N = 1k 10k 20k 100k 1M
#   sudo benches/vs-knockd.sh 1000 50000      # other N
#   sudo METRICS=1 benches/vs-knockd.sh 100000 # also ours with --metrics,
#                                              # scraped every 100 ms meanwhile
#   sudo BASELINE=/tmp/knockd-old benches/vs-knockd.sh 1000000
#                                 # also another build of ours (a copy of an
#                                 # earlier target/release/examples/knockd),
#                                 # right after this build, on the same pcap
#   sudo KNOCKD=0 BASELINE=/tmp/knockd-old benches/vs-knockd.sh 1000000
#                                 # ours and the other build only (knockd's
#                                 # 1M run alone takes 10 s of CPU)
#   sudo ROUNDS=6 BASELINE=/tmp/knockd-old benches/vs-knockd.sh 10000 1000000
#                                 # the whole set six times (each N's pcap
#                                 # made once), then per N and daemon the
#                                 # median µs/pkt over the rounds: the
#                                 # machine's speed drifts, so compare builds
#                                 # round by round
#   sudo EXPIRE=1 KNOCKD=0 benches/vs-knockd.sh 1000000
#                                 # also the CPU each daemon spends when the
#                                 # flood's attempts expire (seq_timeout,
#                                 # 30 s, after their first knock): an extra
#                                 # column, measured from the end of the run
#                                 # until the daemon is idle again 31 s on
#   sudo PERF=/tmp/prof benches/vs-knockd.sh 1000000
#                                 # `perf record -g` each run of ours (not
#                                 # knockd) into /tmp/prof.N.NAME.data
#
# Both daemons get the same knockd.conf (a command door that touches a
# marker file) and a log file of their own (`-g`; LOGFILE=0: none). Per run,
# once the daemon has gone idle (its CPU time unchanged for 1 s, at most
# SETTLE_MAX seconds after the replay):
#   opened   the marker file for 198.18.0.2 exists
#   log MB   the size of the log file after the run (the daemon stopped)
#   log open the log file holds 198.18.0.2's OPEN SESAME line
#   CPU s    utime + stime from /proc/PID/stat (whole run, start-up included)
#   µs/pkt   CPU s / frames sent (N + 3)
#   VmHWM    peak resident memory from /proc/PID/status
#   drops    the kernel's drop counter of the daemon's packet socket(s),
#            tp_drops of PACKET_STATISTICS: for knockd read from outside
#            (pidfd_getfd + getsockopt) before it stops; ours reports the same
#            counter itself at exit (--stats-json kernel_drops). (`ss -0 -m`'s
#            sk_drops misses drops in libpcap's TPACKET_V3 ring.)
# Namespaces are created here (198.18.0.0/15 only) and removed on exit.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
SIZES=("$@")
[ ${#SIZES[@]} -eq 0 ] && SIZES=(1000 10000 20000 100000 1000000)
SETTLE_MAX=${SETTLE_MAX:-120}
ROUNDS=${ROUNDS:-1}
LOGFILE=${LOGFILE:-1}
DEBIAN_KNOCKD=${DEBIAN_KNOCKD:-/usr/sbin/knockd}

[ "$(id -u)" -eq 0 ] || { echo "needs root (namespaces)" >&2; exit 1; }
for t in tcpreplay ss "$DEBIAN_KNOCKD"; do
  command -v "$t" >/dev/null || { echo "missing $t" >&2; exit 1; }
done

cargo build --quiet --release --example knockd --example floodgen
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OURS=$TARGET/release/examples/knockd
FLOODGEN=$TARGET/release/examples/floodgen

S=kvb-srv-$$
C=kvb-cli-$$
WORK=$(mktemp -d /tmp/vs-knockd.XXXXXX)
DPID=
cleanup() {
  [ -n "$DPID" ] && kill -9 "$DPID" 2>/dev/null || true
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
ip -n "$S" addr add 198.18.0.1/24 dev kn0
ip -n "$C" addr add 198.18.0.2/24 dev kn1
ip -n "$S" link set kn0 up
ip -n "$C" link set kn1 up
MAC=$(ip netns exec "$S" cat /sys/class/net/kn0/address)

cat >"$WORK/knockd.conf" <<EOF
[options]
    Interface = kn0

[openSSH]
    sequence    = 7000,8000,9000
    seq_timeout = 30
    tcpflags    = syn
    command     = /usr/bin/touch $WORK/opened-%IP%
EOF

HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo -1; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
# tp_drops of the packet socket(s) of process $1 (PACKET_STATISTICS, read
# through a pidfd_getfd(2) duplicate; knockd never reads them itself, so they
# count since it opened the socket).
PSTATS=$(cat <<'PY'
import ctypes, os, socket, struct, sys
pid = int(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
with open(f"/proc/{pid}/net/packet") as f:
    inodes = {l.split()[8] for l in list(f)[1:]}
pidfd = os.pidfd_open(pid)
drops = 0
for fd in os.listdir(f"/proc/{pid}/fd"):
    try:
        link = os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        continue
    if not (link.startswith("socket:[") and link[8:-1] in inodes):
        continue
    mine = libc.syscall(438, pidfd, int(fd), 0)  # pidfd_getfd
    if mine < 0:
        sys.exit("pidfd_getfd: " + os.strerror(ctypes.get_errno()))
    s = socket.socket(fileno=mine)
    drops += struct.unpack("II", s.getsockopt(263, 6, 12)[:8])[1]  # SOL_PACKET, PACKET_STATISTICS
    s.detach()
    os.close(mine)
print(drops)
PY
)
sock_drops() { python3 -c "$PSTATS" "$1"; }
capturing() { [ "$(wc -l <"/proc/$1/net/packet" 2>/dev/null || echo 0)" -gt 1 ]; }

# settle PID: waits until the process's CPU time stops moving for a second;
# fails after SETTLE_MAX seconds.
settle() {
  local last=-2 now t0=$SECONDS
  while :; do
    now=$(ticks "$1")
    [ "$now" = "$last" ] && return 0
    [ $((SECONDS - t0)) -ge "$SETTLE_MAX" ] && return 1
    last=$now
    sleep 1
  done
}

# run_one NAME PCAP N -> prints one table row
run_one() {
  local name=$1 pcap=$2 n=$3 out="$WORK/$1.out" log="$WORK/$1.log"
  rm -f "$WORK"/opened-* "$log"
  local logargs=()
  [ "$LOGFILE" = 1 ] && logargs=(-g "$log")
  local scraper=""
  if [ "$name" = knockd ]; then
    ip netns exec "$S" "$DEBIAN_KNOCKD" -c "$WORK/knockd.conf" -i kn0 "${logargs[@]}" \
      >"$out" 2>"$WORK/$name.err" &
  elif [ "$name" = "knock-rs, baseline" ]; then
    ip netns exec "$S" "$BASELINE" -c "$WORK/knockd.conf" -i kn0 --stats-json \
      --state-dir "$WORK" "${logargs[@]}" >"$out" 2>"$WORK/$name.err" &
  elif [ "$name" = "knock-rs, scraped" ]; then
    ip netns exec "$S" "$OURS" -c "$WORK/knockd.conf" -i kn0 --stats-json \
      --state-dir "$WORK" --metrics 127.0.0.1:9464 "${logargs[@]}" >"$out" 2>"$WORK/$name.err" &
  else
    ip netns exec "$S" "$OURS" -c "$WORK/knockd.conf" -i kn0 --stats-json \
      --state-dir "$WORK" "${logargs[@]}" >"$out" 2>"$WORK/$name.err" &
  fi
  DPID=$!
  for _ in $(seq 200); do capturing "$DPID" && break; sleep 0.05; done
  capturing "$DPID" || { echo "$name did not start: $(cat "$WORK/$name.err")" >&2; exit 1; }
  sleep 0.3
  local perf=""
  if [ -n "${PERF:-}" ] && [ "$name" != knockd ]; then
    perf record -q -g -p "$DPID" -o "$PERF.$n.${name//[^a-z]/}.data" 2>/dev/null &
    perf=$!
    sleep 0.5
  fi
  if [ "$name" = "knock-rs, scraped" ]; then
    ip netns exec "$S" python3 -c '
import socket, time
n = 0
while True:
    try:
        s = socket.create_connection(("127.0.0.1", 9464))
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        while s.recv(65536):
            pass
        s.close()
        n += 1
    except OSError:
        pass
    time.sleep(0.1)
' &
    scraper=$!
  fi
  local rate
  rate=$(ip netns exec "$C" tcpreplay --topspeed -i kn1 "$pcap" 2>&1 |
    awk '/^Rated:/ {printf "%.0f", $(NF-1)}')
  local busy=""
  settle "$DPID" || busy=" (still busy after ${SETTLE_MAX} s)"
  sleep 0.5 # the command sink runs `touch` on a worker
  local opened=no
  [ -e "$WORK/opened-198.18.0.2" ] && opened=yes
  local cpu hwm drops=""
  cpu=$(ticks "$DPID")
  hwm=$(hwm_kib "$DPID")
  local expiry=""
  if [ "${EXPIRE:-0}" = 1 ]; then
    sleep 31
    settle "$DPID" || true
    expiry=$(awk -v a="$(ticks "$DPID")" -v b="$cpu" -v hz="$HZ" 'BEGIN { printf " %.2f |", (a - b) / hz }')
  fi
  # Reading PACKET_STATISTICS resets it: ours reads its own at exit.
  [ "$name" = knockd ] && drops=$(sock_drops "$DPID")
  [ -n "$scraper" ] && { kill "$scraper" 2>/dev/null || true; wait "$scraper" 2>/dev/null || true; }
  [ -n "$perf" ] && { kill -INT "$perf" 2>/dev/null || true; wait "$perf" 2>/dev/null || true; }
  kill -TERM "$DPID"
  for _ in $(seq 100); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$DPID" 2>/dev/null || true
  wait "$DPID" 2>/dev/null || true
  DPID=
  if [ "$name" != knockd ]; then
    drops=$(grep -o '"kernel_drops":[0-9]*' "$out" | cut -d: -f2 || echo "?")
  fi
  local frames=$((n + 3))
  local logmb=- logopen=-
  if [ "$LOGFILE" = 1 ]; then
    logmb=$(awk -v b="$(stat -c %s "$log" 2>/dev/null || echo 0)" 'BEGIN { printf "%.2f", b / 1e6 }')
    logopen=no
    grep -q '198\.18\.0\.2: openSSH: OPEN SESAME' "$log" 2>/dev/null && logopen=yes
  fi
  awk -v name="$name" -v n="$n" -v opened="$opened" -v cpu="$cpu" -v hz="$HZ" \
    -v frames="$frames" -v hwm="$hwm" -v drops="$drops" -v rate="$rate" -v busy="$busy" \
    -v logmb="$logmb" -v logopen="$logopen" -v expiry="$expiry" 'BEGIN {
      printf "| %s | %s | %s%s | %.2f | %.2f | %.1f | %s | %s | %s | %s |%s\n",
        n, name, opened, busy, cpu / hz, cpu / hz / frames * 1e6, hwm / 1024, drops,
        logmb, logopen, rate, expiry }'
}

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "${EXPIRE:-0}" = 1 ]; then
  echo "| N | daemon | opened | CPU s | CPU µs/pkt | VmHWM MiB | kernel drops | log MB | log open | replay pps | expiry CPU s |"
  echo "|---:|---|---|---:|---:|---:|---:|---:|---|---:|---:|"
else
  echo "| N | daemon | opened | CPU s | CPU µs/pkt | VmHWM MiB | kernel drops | log MB | log open | replay pps |"
  echo "|---:|---|---|---:|---:|---:|---:|---:|---|---:|"
fi
for round in $(seq "$ROUNDS"); do
  for n in "${SIZES[@]}"; do
    [ -s "$WORK/flood.$n.pcap" ] ||
      "$FLOODGEN" -n "$n" --dst-mac "$MAC" -o "$WORK/flood.$n.pcap" 2>/dev/null
    if [ "${KNOCKD:-1}" != 0 ]; then run_one knockd "$WORK/flood.$n.pcap" "$n"; fi
    run_one knock-rs "$WORK/flood.$n.pcap" "$n"
    if [ -n "${BASELINE:-}" ]; then run_one "knock-rs, baseline" "$WORK/flood.$n.pcap" "$n"; fi
    if [ -n "${METRICS:-}" ]; then run_one "knock-rs, scraped" "$WORK/flood.$n.pcap" "$n"; fi
  done
done | tee "$WORK/rows"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$ROUNDS" -gt 1 ]; then
  # Per N and daemon: the median µs/pkt over the rounds, and its range.
  echo
  echo "| N | daemon | rounds | median µs/pkt | min | max | opened | drops > 0 |"
  echo "|---:|---|---:|---:|---:|---:|---:|---:|"
  awk -F'|' '{
      n = $2 + 0; d = $3; gsub(/^ +| +$/, "", d); k = n SUBSEP d
      if (!(k in cnt)) order[++keys] = k
      v[k, ++cnt[k]] = $6 + 0
      if ($4 ~ /yes/) opened[k]++
      if ($8 + 0 > 0) dropped[k]++
    }
    END {
      for (i = 1; i <= keys; i++) {
        k = order[i]; c = cnt[k]
        for (a = 1; a <= c; a++) s[a] = v[k, a]
        for (a = 1; a <= c; a++) for (b = a + 1; b <= c; b++) if (s[b] < s[a]) { t = s[a]; s[a] = s[b]; s[b] = t }
        med = (c % 2) ? s[(c + 1) / 2] : (s[c / 2] + s[c / 2 + 1]) / 2
        split(k, p, SUBSEP)
        printf "| %s | %s | %d | %.2f | %.2f | %.2f | %d | %d |\n", p[1], p[2], c, med, s[1], s[c], opened[k], dropped[k]
      }
    }' "$WORK/rows"
fi
