#!/bin/sh
# Runs ufw inside the network namespace $1 without touching this machine's
# own ufw files: a private mount namespace puts copies of /etc/ufw and
# /etc/default/ufw (made in the directory $2) and an empty /run over the
# real ones, for this process tree only. ufw's sysctl file is left out
# (its settings are per network namespace anyway, but nothing outside the
# namespace must change). The remaining arguments are ufw commands, run
# in turn, e.g. "default deny incoming" "--force enable" "allow 22/tcp";
# then the namespace's ruleset is printed as JSON.
set -eu
ns=$1
dir=$2
shift 2
if [ ! -d "$dir/etc-ufw" ]; then
    cp -a /etc/ufw "$dir/etc-ufw"
    sed 's|^IPT_SYSCTL=.*|IPT_SYSCTL=/dev/null|' /etc/default/ufw >"$dir/default-ufw"
fi
export UFW_DIR="$dir"
exec ip netns exec "$ns" unshare --mount --propagation private sh -eu -c '
    mount --bind "$UFW_DIR/etc-ufw" /etc/ufw
    mount --bind "$UFW_DIR/default-ufw" /etc/default/ufw
    mount -t tmpfs tmpfs /run
    for cmd in "$@"; do
        # shellcheck disable=SC2086 # a ufw command is its words
        ufw $cmd >/dev/null
    done
    nft -j list ruleset
' ufw-netns "$@"
