//! The TOML format. (Documentation only.)
//!
//! The same model as knockd.conf, typed, with unknown fields rejected.
//! Convert an existing knockd.conf with [`knockd_to_toml`](crate::knockd_to_toml).
//!
//! ```toml
//! [options]
//! use_syslog = true               # default false
//! log_file = "/var/log/knockd.log"
//! pid_file = "/var/run/knockd.pid"  # the default
//! interfaces = ["eth0", "wg0"]    # default ["eth0"]
//! blacklist = { invalid = 3, window = "60s", block = "180s" }
//! blacklist_reach = "doors"       # the default; or "host"
//! metrics = "127.0.0.1:9464"      # OpenMetrics endpoint; default none
//!
//! [[door]]
//! name = "openSSH"
//! sequence = ["7000:tcp", "8000:udp", "9000:tcp"]  # knockd syntax, one step per string
//! seq_timeout = "5s"              # or 5 (seconds); "500ms", "2m", "1h" also work
//! tcpflags = ["syn", "!ack"]
//! start_command = "/sbin/iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT"
//! stop_command = "/sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT"
//! cmd_timeout = 10
//! target = "198.18.0.1"
//!
//! [[door]]
//! name = "web"
//! one_time_sequences = "/etc/knockd/web.seq"   # or sequence_file = "..." (reusable)
//! open = ["tcp/443", "udp/1194"]
//! firewall = "auto"               # "auto" (default with open), "iptables", "nftables" or "command"
//! grant_prefix = [24, 64]
//! allow_repeat = true
//! cooldown = "30s"
//! from = ["198.18.0.0/15", "2001:db8::/32"]
//! strict = false
//!
//! [[door]]
//! name = "derived"
//! sequence_secret_file = "/etc/knock.key"
//! sequence_length = 4
//! sequence_period = "30s"
//! sequence_ports = "10000-60000"
//! sequence_protocols = ["tcp", "udp"]
//!
//! [[door]]
//! name = "spa"                    # Single Packet Authorization (fwknop's packets)
//! spa_key_base64 = "..."          # or spa_key = "passphrase"
//! spa_hmac_key_base64 = "..."     # or spa_hmac_key = "..."
//! open = ["tcp/22"]               # OPEN_PORTS
//! from = ["198.18.0.0/15"]        # SOURCE
//! cmd_timeout = 30                # FW_ACCESS_TIMEOUT
//! spa_restrict_ports = ["tcp/23"]
//! spa_require_source_address = true
//! spa_require_username = "alice"
//! spa_access_expire = 1830297599  # Unix seconds
//! ```
//!
//! `[options]` also takes `spa_port = 62201`, `spa_window = "120s"` and
//! `capture_ring = "32M"` (the receive ring per captured interface: `"1M"`,
//! a number of bytes, or `0` for none).
//!
//! Differences from knockd.conf: doors are `[[door]]` tables with a `name`
//! (in order); a sequence file is `sequence_file`, not a path in `sequence`;
//! `grant_prefix` is a two-element array; durations are strings with a unit
//! or integer seconds. Errors about a door point at its `[[door]]` line.
