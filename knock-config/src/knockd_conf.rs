//! The knockd.conf dialect: what we accept, how it differs from knockd 0.8,
//! and our extension keys. (Documentation only.)
//!
//! # Syntax
//! * `[options]` holds the globals (the name is matched case-insensitively);
//!   every other `[name]` section is a door. Door names are case-sensitive
//!   and must be unique.
//! * A line whose first non-blank character is `#` is a comment. Comments
//!   are whole lines only: `command = iptables ... # note` keeps `# note` in
//!   the command, as knockd does.
//! * Keys are case-insensitive. The value is everything after the first
//!   `=`, trimmed, so commands may contain `=`.
//! * Sequences: `port[:proto]` entries separated by commas, protocol `tcp`
//!   (default) or `udp`, case-insensitive, spaces around entries allowed, at
//!   most 32 entries.
//!
//! # knockd keys
//! | section | key | meaning | default |
//! |---|---|---|---|
//! | options | `UseSyslog` | bare word: log to syslog | off |
//! | options | `LogFile = path` | log file | none |
//! | options | `PidFile = path` | pid file (daemon mode) | `/var/run/knockd.pid` |
//! | options | `Interface = name` | capture interface; ours also takes `eth0, wg0` | `eth0` |
//! | door | `sequence = 7000,8000:udp` | the sequence; a value containing `/` is a file of reusable sequences | |
//! | door | `one_time_sequences = path` | one-time sequence file | |
//! | door | `seq_timeout` / `timeout` | whole sequence within this time of the first knock | 25 s |
//! | door | `tcpflags = syn,!ack` | flags that must be set (`!`: clear); no spaces | any |
//! | door | `start_command` / `command` | shell command on open, `%IP%` is the knocker | |
//! | door | `start_command_6` / `command_6` | the same for IPv6 knockers (falls back to `start_command`) | |
//! | door | `stop_command`, `stop_command_6` | shell command `cmd_timeout` after the open | |
//! | door | `cmd_timeout` | grant lifetime | 10 s |
//! | door | `target = IP` | only knocks sent to this address count | |
//!
//! Durations are whole seconds as in knockd; ours also accept a unit suffix
//! (`500ms`, `25s`, `2m`, `1h`).
//!
//! # Extension keys
//! knockd rejects these; they are the only additions to its syntax.
//!
//! | section | key | example | meaning | default |
//! |---|---|---|---|---|
//! | door | `open` | `open = tcp/22,udp/1194` | native grants for the knocker's address, lifetime `cmd_timeout`, no shell | none |
//! | door | `firewall` | `firewall = auto` | how `open` is applied: `auto` (the daemon reads the host's ruleset and picks nftables or iptables, whichever takes effect; it refuses to start where neither would), `iptables`, `nftables`, or `command` (no native grant) | `auto` with `open`, else `command` |
//! | door | `grant_prefix` | `grant_prefix = 24,64` | a native grant covers the knocker's /24 (IPv4) or /64 (IPv6) | `32,128` |
//! | door | `allow_repeat` | `allow_repeat = yes` | a repeated knock (retransmitted SYN) does not kill the attempt | `no` |
//! | door | `cooldown` | `cooldown = 30` | after an open, ignore the source's knocks on this door this long | `0` |
//! | door | `from` | `from = 198.18.0.0/15, 2001:db8::/32` | only knocks from these networks (or addresses) count | everyone |
//! | door | `strict` | `strict = yes` | sweep-proof: while an attempt is in progress, any other TCP SYN or UDP datagram from the source (to `target`, if set) invalidates it; the kernel filter then passes every SYN and datagram | `no` |
//! | door | `sequence_secret_file` | `sequence_secret_file = /etc/knock.key` | time-derived sequences from this secret (owner-readable only, not empty), instead of `sequence`; windows w-1, w, w+1 are accepted, each once ([`crate::derive`]) | |
//! | door | `sequence_length` | `sequence_length = 4` | steps of a derived sequence, 1-32, at most the number of ports in `sequence_ports` | `3` |
//! | door | `sequence_period` | `sequence_period = 30s` | how long one derived sequence is valid (above 0; `seq_timeout` at most 100 periods) | `30s` |
//! | door | `sequence_ports` | `sequence_ports = 10000-60000` | where derived ports fall (no port twice in a sequence) | `1024-65535` |
//! | door | `sequence_protocols` | `sequence_protocols = tcp,udp` | protocols of derived steps | `tcp` |
//! | door | `spa_key_base64`, `spa_hmac_key_base64` | `spa_key_base64 = ...` | a Single Packet Authorization door: opened by an fwknop packet that verifies with these keys (fwknop's `KEY_BASE64`, `HMAC_KEY_BASE64`; `spa_key`/`spa_hmac_key` take the key as text), instead of a sequence; `from` is fwknop's `SOURCE`, `open` its `OPEN_PORTS`, `cmd_timeout` its `FW_ACCESS_TIMEOUT` ([`crate::spa`]) | |
//! | door | `spa_restrict_ports` | `spa_restrict_ports = tcp/23` | ports an SPA request may never open (`RESTRICT_PORTS`) | none |
//! | door | `spa_require_source_address` | `spa_require_source_address = yes` | refuse `0.0.0.0` requests (`fwknop -s`) | `no` |
//! | door | `spa_require_username` | `spa_require_username = alice` | only this user's requests (`REQUIRE_USERNAME`) | any |
//! | door | `spa_access_expire` | `spa_access_expire = 1830297599` | Unix time after which the door grants nothing (`ACCESS_EXPIRE_EPOCH`) | never |
//! | options | `spa_port` | `spa_port = 62201` | the UDP port SPA packets come to | `62201` |
//! | options | `spa_window` | `spa_window = 120` | how far an SPA packet's timestamp may be from the clock (`MAX_SPA_PACKET_AGE`) | `120s` |
//! | options | `blacklist` | `blacklist = 3 invalid in 60s for 180s` | a source with N strikes within the window is blocked for the given time: its knocks are ignored and the firewall refuses its new connections (established ones pass); a strike is a knock that invalidates an attempt or, once the source has one, that touches a new non-step port of a strict door ([`knock_core::Blacklist`]) | none |
//! | options | `metrics` | `metrics = 127.0.0.1:9464` | serve OpenMetrics (Prometheus) counters on this address and port, at `/metrics`; bind it to loopback or a management address | none |
//! | options | `blacklist_reach` | `blacklist_reach = host` | which new connections a block refuses: `doors` (to every native door's `open` ports) or `host` (to every port) ([`BlacklistReach`](crate::BlacklistReach)) | `doors` |
//! | options | `capture_ring` | `capture_ring = 1M` | the memory-mapped receive ring of each captured interface (resident memory, per interface), `64K` to `1G` (`K`, `M`, `G` are 1024-based; rounded up to 64 KiB), or `0` for none (one `recvfrom` per packet) ([`crate::parse_capture_ring`]) | `32M` |
//!
//! Booleans are `yes`/`no` (also `true`/`false`, `on`/`off`). A door has
//! exactly one of `sequence`, `one_time_sequences` and
//! `sequence_secret_file`; the other `sequence_*` keys need
//! `sequence_secret_file`. `firewall = iptables|nftables` needs `open`, and
//! `open` cannot go with `firewall = command`. A door may have both commands
//! and `open`: the grant is applied natively and the commands run too.
//!
//! # Sequence files
//! One sequence per line in the inline syntax, blank lines and `#` lines
//! skipped, usually written with a leading space (` 80:tcp,443:tcp,53:udp`)
//! because a used one-time line gets `#` written over its first byte.
//! `sequence = /path`: every line opens the door, reusable. `one_time_sequences
//! = /path`: only the first unused line is active; once used it is marked and
//! the next one becomes active; with none left the door is disabled
//! ([`DoorConfig::core_door`](crate::DoorConfig::core_door) returns `None`).
//! See [`SequenceFile::mark_used`](crate::SequenceFile::mark_used) for the
//! crash-safe write.
//!
//! # knockd quirks, and what we do instead
//! | knockd 0.8 | knock-rs |
//! |---|---|
//! | `sequence = /etc/file` silently becomes port 0 | a file of reusable sequences, one per line |
//! | a trailing comma or junk gives port 0; `1000-2000` reads as 1000 | an error naming the entry and its column |
//! | ports above 65535 wrap or fail obscurely | an error |
//! | an unparsable one-time line is skipped, and the `#` later lands on the wrong line | the file is rejected with the line number |
//! | one-time invalidation rewrites the file in place | temp file, fsync, rename, fsync dir; a file changed on disk is re-read, never clobbered |
//! | a key given twice: the last wins | an error naming both lines (aliases such as `command`/`start_command` count as one key) |
//! | a door without `sequence` is accepted and never opens | an error |
//! | `UseSyslog = yes` | an error: `UseSyslog` is a bare word |
//! | spaces inside `tcpflags` misparse | an error |
//! | one `Interface` | a comma-separated list |
//!
//! What we keep on purpose: whole-line comments only, the value after the
//! first `=`, case-insensitive keys and protocols, the defaults
//! (`seq_timeout` 25 s, `cmd_timeout` 10 s, `Interface` eth0,
//! `/var/run/knockd.pid`), and the one-time file format, so files stay
//! interchangeable with knockd.
