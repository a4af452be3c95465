#!/bin/sh
# Runs firewalld inside the network namespace $1 without touching this
# machine's own firewalld, D-Bus or files: a private mount namespace puts a
# copy of /etc/firewalld (made in the directory $2), an empty /run (where
# a D-Bus system bus of its own is started, which firewalld needs) and a
# private /var/log over the real ones, for this process tree only. The
# remaining arguments are firewall-cmd options, run in turn once firewalld
# is up (e.g. "--remove-service=ssh"); then the namespace's ruleset is
# printed as JSON. The daemons (dbus-daemon, firewalld, polkitd) keep
# running in the namespace: deleting it ends them (knock-testnet's Netns
# kills every process in it).
set -eu
ns=$1
dir=$2
shift 2
mkdir -p "$dir/etc-firewalld" "$dir/log"
cp -a /etc/firewalld/. "$dir/etc-firewalld/"
export FWD_DIR="$dir"
exec ip netns exec "$ns" unshare --mount --propagation private sh -eu -c '
    mount --bind "$FWD_DIR/etc-firewalld" /etc/firewalld
    mount -t tmpfs tmpfs /run
    mount --bind "$FWD_DIR/log" /var/log
    mkdir -p /run/dbus
    dbus-daemon --system --fork --nopidfile
    firewalld --nofork --nopid >"$FWD_DIR/log/firewalld.out" 2>&1 &
    up=no
    for _ in $(seq 1 150); do
        if firewall-cmd --state >/dev/null 2>&1; then up=yes; break; fi
        sleep 0.2
    done
    if [ "$up" != yes ]; then
        echo "firewalld did not come up:" >&2
        cat "$FWD_DIR/log/firewalld.out" >&2
        exit 1
    fi
    for opt in "$@"; do
        firewall-cmd "$opt" >/dev/null
    done
    nft -j list ruleset
' firewalld-netns "$@"
