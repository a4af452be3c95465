#!/usr/bin/env bash
# Follows README.md, "Replacing knockd", from a clean clone of this
# repository's HEAD, as root, without touching the machine's own files or
# firewall: the steps that install run in a private mount namespace with
# tmpfs over /usr/local, /etc/systemd/system and /var/lib (and a test
# knockd.conf bound over /etc/knockd.conf, if there is one), the daemon in
# network namespaces made here (198.18.0.0/24 on a veth). systemd need not
# run: the unit is checked with `systemd-analyze verify` and the daemon is
# started as the unit starts it (capability bounding set, NOTIFY_SOCKET).
#
#   sudo tests/readme-install.sh     # about 4 minutes on 2 cores
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "needs root (namespaces)" >&2; exit 1; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
T=$(mktemp -d)
chmod 755 "$T"
export T
git clone -q "$ROOT" "$T/src"
cd "$T/src"
git log --oneline -1
cat > $T/knockd.conf <<'CONF'
[options]
    Interface = kxa
    metrics = 127.0.0.1:9464

[openSSH]
    sequence    = 7000,8000,9000
    seq_timeout = 5
    open        = tcp/22
    cmd_timeout = 600
CONF
cat > $T/notify.py <<'PY'
import socket, sys, os
p = sys.argv[1]
try: os.unlink(p)
except FileNotFoundError: pass
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(p)
with open(sys.argv[2], "a", buffering=1) as f:
    while True:
        f.write(s.recv(4096).decode().replace("\n", " ") + "\n")
PY
ip netns del kxs 2>/dev/null || true; ip netns del kxc 2>/dev/null || true
ip netns add kxs; ip netns add kxc
ip link add kxa netns kxs type veth peer name kxb netns kxc
ip -n kxs addr add 198.18.0.1/24 dev kxa; ip -n kxs link set kxa up; ip -n kxs link set lo up
ip -n kxc addr add 198.18.0.2/24 dev kxb; ip -n kxc link set kxb up
trap 'ip netns del kxs; ip netns del kxc; kill $(jobs -p) 2>/dev/null || true; rm -rf "$T"' EXIT

unshare -m --propagation private bash -euo pipefail -c '
fail() { echo "FAILED: $*" >&2; exit 1; }
mount -t tmpfs tmpfs /usr/local
mkdir -p /etc/systemd/system && mount -t tmpfs tmpfs /etc/systemd/system
if [ -e /etc/knockd.conf ]; then
  mount --bind $T/knockd.conf /etc/knockd.conf
  CONF=/etc/knockd.conf
else
  CONF=$T/knockd.conf
fi
echo "== 1. build and install"
apt-get install -s -y build-essential libclang-dev git | tail -1
mount -t tmpfs tmpfs /var/lib
time cargo install --locked --quiet --path . --root /usr/local
cargo install --list --root /usr/local
ls -l /usr/local/bin
echo "== 2. check"
ip netns exec kxs /usr/local/bin/knockd-rs --check -c $CONF
echo "== 4. unit"
install -m 644 examples/knockd-rs.service /etc/systemd/system/knockd-rs.service
systemd-analyze verify /etc/systemd/system/knockd-rs.service && echo "verify: clean"
echo "== run as the unit runs it (capability bounding set, NOTIFY_SOCKET)"
python3 $T/notify.py $T/notify.sock $T/notify.log & NP=$!
sleep 0.3; : > $T/notify.log
mkdir -p /var/lib/knock-rs
ip netns exec kxs env NOTIFY_SOCKET=$T/notify.sock \
  setpriv --bounding-set=-all,+net_raw,+net_admin --inh-caps=-all,+net_raw,+net_admin --ambient-caps=-all,+net_raw,+net_admin \
  /usr/local/bin/knockd-rs -c $CONF --state-dir /var/lib/knock-rs 2> $T/stderr.log & KP=$!
for i in $(seq 100); do grep -q READY=1 $T/notify.log && break; sleep 0.1; done
cat $T/notify.log
grep -q READY=1 $T/notify.log
grep -E "^(Name|Cap(Eff|Bnd|Amb))" /proc/$KP/status
echo "== knock with the installed client"
ip netns exec kxc /usr/local/bin/knock-rs -d 50 198.18.0.1 7000 8000 9000
sleep 0.5
ip netns exec kxs nft list table inet knock | grep -E "198\.18\.0\.2" || fail "no grant"
echo "grant: in the nftables set"
echo "== 7. metrics"
ip netns exec kxs curl -s 127.0.0.1:9464/metrics > $T/metrics.txt
grep -E "^knock_door_(opens_total|stages_total|grants_open)|^knock_capture_frames_total|^# EOF" $T/metrics.txt
grep -q "^knock_door_opens_total{door=\"openSSH\"} 1$" $T/metrics.txt || fail "metrics"
echo "== 6. reload"
kill -HUP $KP; sleep 0.5; tail -2 $T/notify.log
tail -2 $T/notify.log | grep -q RELOADING=1 || fail "no RELOADING=1"
echo "== stop"
kill -TERM $KP; wait $KP || true; tail -1 $T/notify.log
grep -q STOPPING=1 $T/notify.log || fail "no STOPPING=1"
echo "== stderr"; cat $T/stderr.log
echo "== 3. setcap, run as nobody"
setcap cap_net_raw,cap_net_admin=ep /usr/local/bin/knockd-rs
getcap /usr/local/bin/knockd-rs
D=$(mktemp -d); chmod 777 $D
ip netns exec kxs setpriv --reuid=nobody --regid=nogroup --clear-groups \
  /usr/local/bin/knockd-rs -c $CONF --state-dir $D/state 2> $T/nobody.log & NB=$!
sleep 1.5
ip netns exec kxs nft list table inet knock > /dev/null || fail "nobody: no table"
echo "nobody: nftables table present"
kill -TERM $NB; wait $NB || true
cat $T/nobody.log
rm -rf $D
echo "== 8. uninstall"
ip netns exec kxs nft list set inet knock $(ip netns exec kxs nft list table inet knock | awk "/set /{print \$2; exit}") | grep -c 198.18.0.2 || true
ip netns exec kxs timeout -s INT 3 /usr/local/bin/knockd-rs -c $CONF --state-dir /var/lib/knock-rs --close-at-exit 2>&1 | tail -3 || true
! ip netns exec kxs nft list table inet knock | grep 198.18.0.2 || fail "a grant is left"
echo "no grant left"
ip netns exec kxs nft delete table inet knock 2>/dev/null || true
rm /etc/systemd/system/knockd-rs.service
cargo uninstall --root /usr/local knock-rs
[ -z "$(ls -A /usr/local/bin)" ] || fail "files left in /usr/local/bin"
rm -rf /var/lib/knock-rs
echo "== 1b. the build without GPL code"
time cargo install --locked --quiet --path . --root /usr/local --no-default-features --features cli,daemon
cargo install --list --root /usr/local
printf "[options]\n Interface = kxa\n[ssh]\n sequence = 7000,8000\n open = tcp/22\n firewall = nftables\n" > $T/nft.conf
! ip netns exec kxs /usr/local/bin/knockd-rs --check -c $T/nft.conf || fail "firewall = nftables accepted without nftables"
ip netns exec kxs /usr/local/bin/knockd-rs --check -c $CONF | grep "grants go to iptables" || fail "auto is not iptables"
cargo uninstall --root /usr/local knock-rs
kill $NP
echo "README procedure: all steps passed"
'
