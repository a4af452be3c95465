//! The real-world knockd.conf shapes of issue 3 parse and mean what they say.

use std::time::Duration;

use knock_config::{BlacklistReach, Config, FirewallKind, SequenceSource};
use knock_core::{
    Decision, Event, FlagFilter, Limits, Matcher, Sequences, Step, TcpFlags, Timestamp,
};
use std::net::{IpAddr, Ipv4Addr};

const ME: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));

/// Knocks `steps` at one-second intervals from `t`; returns the decisions.
fn knock(m: &mut Matcher, t: u64, steps: &[Step]) -> Vec<Decision> {
    for (i, s) in steps.iter().enumerate() {
        let now = Timestamp::from_secs(t + i as u64);
        let ev = match s.proto {
            knock_core::Proto::Tcp => Event::tcp(ME, SERVER, s.port, TcpFlags::SYN, now),
            knock_core::Proto::Udp => Event::udp(ME, SERVER, s.port, now),
        };
        m.handle_event(now, &ev);
    }
    std::iter::from_fn(|| m.poll_decision()).collect()
}

fn opened(ds: &[Decision]) -> Vec<String> {
    ds.iter()
        .filter(|d| matches!(d, Decision::Open { .. }))
        .map(|d| format!("{}", d.door()))
        .collect()
}

#[test]
fn open_door_and_reversed_close_door() {
    let conf = "\
[options]
        UseSyslog

[openSSH]
        sequence    = 7000,8000,9000
        seq_timeout = 5
        command     = /sbin/iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
        tcpflags    = syn

[closeSSH]
        sequence    = 9000,8000,7000
        seq_timeout = 5
        command     = /sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
        tcpflags    = syn
";
    let c = Config::from_knockd_str(conf, "/etc/knockd.conf").unwrap();
    assert!(c.options.use_syslog);
    assert_eq!(c.options.interfaces, ["eth0"]);
    assert_eq!(c.options.pid_file.to_str(), Some("/var/run/knockd.pid"));
    assert_eq!(c.options.log_file, None);
    let [open, close] = &c.doors[..] else {
        panic!()
    };
    assert_eq!(open.name, "openSSH");
    assert_eq!(
        open.sequence,
        SequenceSource::Inline(vec![Step::tcp(7000), Step::tcp(8000), Step::tcp(9000)])
    );
    assert_eq!(
        close.sequence,
        SequenceSource::Inline(vec![Step::tcp(9000), Step::tcp(8000), Step::tcp(7000)])
    );
    assert_eq!(open.seq_timeout, Duration::from_secs(5));
    assert_eq!(
        open.tcp_flags,
        FlagFilter {
            set: TcpFlags::SYN,
            clear: TcpFlags::EMPTY
        }
    );
    assert_eq!(
        open.start_command.as_deref(),
        Some("/sbin/iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT")
    );
    assert_eq!(open.start_command_for(true), open.start_command.as_deref());
    assert_eq!(
        close.start_command.as_deref(),
        Some("/sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT")
    );
    assert_eq!(open.stop_command, None);
    assert_eq!(open.firewall, FirewallKind::Command);
    assert_eq!(open.cmd_timeout, Duration::from_secs(10));

    // Through the core: 7000,8000,9000 opens openSSH; the reverse opens closeSSH.
    let mut m = Matcher::new(c.core_doors(), Limits::default()).unwrap();
    let id_open = m.door_id("openSSH").unwrap();
    let id_close = m.door_id("closeSSH").unwrap();
    assert_eq!(m.door(id_open).unwrap().grant_lifetime, None);
    let ds = knock(
        &mut m,
        100,
        &[Step::tcp(7000), Step::tcp(8000), Step::tcp(9000)],
    );
    assert_eq!(opened(&ds), [id_open.to_string()]);
    let ds = knock(
        &mut m,
        200,
        &[Step::tcp(9000), Step::tcp(8000), Step::tcp(7000)],
    );
    assert_eq!(opened(&ds), [id_close.to_string()]);
}

#[test]
fn simple_sequence_with_interface_and_timeout() {
    let conf = "[options]\n  Interface = ens33\n  LogFile = /var/log/knockd.log\n\n[SSH]\n  sequence = 80,443,21\n  seq_timeout = 29\n  command = ufw allow from %IP% to any port 22\n";
    let c = Config::from_knockd_str(conf, "knockd.conf").unwrap();
    assert_eq!(c.options.interfaces, ["ens33"]);
    assert_eq!(
        c.options.log_file.as_deref().and_then(|p| p.to_str()),
        Some("/var/log/knockd.log")
    );
    assert!(!c.options.use_syslog);
    let doors = c.core_doors();
    assert_eq!(doors.len(), 1);
    assert_eq!(doors[0].name, "SSH");
    assert_eq!(
        doors[0].sequences,
        Sequences::Reusable(vec![vec![Step::tcp(80), Step::tcp(443), Step::tcp(21)]])
    );
    assert_eq!(doors[0].seq_timeout, Duration::from_secs(29));
    assert_eq!(doors[0].tcp_flags, FlagFilter::ANY);
}

#[test]
fn sequence_file_of_reusable_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let seqs = crate::write(
        dir.path(),
        "knockd_ssh_sequences",
        "# any of these opens\n 1111,2222,3333\n 4444:udp,5555\n\n 6666,7777:udp,8888\n",
    );
    let conf = format!("[options]\n  UseSyslog\n[openSSH]\n  sequence = {}\n  seq_timeout = 15\n  start_command = /usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n", seqs.display());
    let c = Config::from_knockd_str(&conf, "knockd.conf").unwrap();
    let d = &c.doors[0];
    let file = d.sequence_file().unwrap();
    assert_eq!(file.path(), seqs);
    assert_eq!(
        file.sequences(),
        vec![
            vec![Step::tcp(1111), Step::tcp(2222), Step::tcp(3333)],
            vec![Step::udp(4444), Step::tcp(5555)],
            vec![Step::tcp(6666), Step::udp(7777), Step::tcp(8888)],
        ]
    );
    assert_eq!(
        file.entries().iter().map(|e| e.line).collect::<Vec<_>>(),
        [2, 3, 5]
    );
    let core = c.core_doors();
    assert!(matches!(&core[0].sequences, Sequences::Reusable(l) if l.len() == 3));

    // Any line opens, and again (reusable).
    let mut m = Matcher::new(core, Limits::default()).unwrap();
    assert_eq!(
        opened(&knock(&mut m, 100, &[Step::udp(4444), Step::tcp(5555)])).len(),
        1
    );
    assert_eq!(
        opened(&knock(
            &mut m,
            200,
            &[Step::tcp(1111), Step::tcp(2222), Step::tcp(3333)]
        ))
        .len(),
        1
    );
    assert_eq!(
        opened(&knock(&mut m, 300, &[Step::udp(4444), Step::tcp(5555)])).len(),
        1
    );
}

#[test]
fn several_one_time_sequence_doors() {
    let dir = tempfile::tempdir().unwrap();
    let ssh = crate::write(
        dir.path(),
        "ssh_otp",
        " 80:tcp,443:tcp,53:udp\n 81:tcp,444:tcp,54:udp\n 82:tcp,445:tcp,55:udp\n",
    );
    let web = crate::write(
        dir.path(),
        "web_otp",
        "#1000:tcp,2000:tcp\n 3000:udp,4000:tcp\n",
    );
    let conf = format!(
        "[options]
    logfile = /var/log/knockd.log

[opencloseSSH]
    one_time_sequences = {ssh}
    seq_timeout = 15
    tcpflags    = syn
    start_command = /sbin/iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
    cmd_timeout = 25
    stop_command = /sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT

[opencloseWEB]
    one_time_sequences = {web}
    start_command = /sbin/iptables -A INPUT -s %IP% -p tcp --dport 443 -j ACCEPT
    cmd_timeout = 25
    stop_command = /sbin/iptables -D INPUT -s %IP% -p tcp --dport 443 -j ACCEPT
",
        ssh = ssh.display(),
        web = web.display()
    );
    let mut c = Config::from_knockd_str(&conf, "/etc/knockd.conf").unwrap();
    assert_eq!(c.doors.len(), 2);
    for d in &c.doors {
        assert!(matches!(d.sequence, SequenceSource::OneTime { .. }));
        assert_eq!(d.cmd_timeout, Duration::from_secs(25));
        assert_eq!(d.grant_lifetime(), Some(Duration::from_secs(25)));
        assert!(d.stop_command.as_deref().unwrap().contains("-D INPUT"));
    }
    // The used first line of web_otp is skipped.
    let web_file = c.doors[1].sequence_file().unwrap();
    assert_eq!(
        web_file.sequences(),
        vec![vec![Step::udp(3000), Step::tcp(4000)]]
    );
    assert_eq!(web_file.line_of(0), Some(2));

    let core = c.core_doors();
    assert_eq!(core[0].grant_lifetime, Some(Duration::from_secs(25)));
    assert!(matches!(&core[0].sequences, Sequences::OneTime { list, next: 0 } if list.len() == 3));
    let mut m = Matcher::new(core, Limits::default()).unwrap();
    let first = [Step::tcp(80), Step::tcp(443), Step::udp(53)];
    let ds = knock(&mut m, 100, &first);
    assert_eq!(opened(&ds).len(), 1);
    // The daemon's job on SequenceConsumed: mark the line in the file.
    for d in &ds {
        if let Decision::SequenceConsumed { door, index, .. } = *d {
            let name = m.door(door).unwrap().name.clone();
            let marked = c
                .door_mut(&name)
                .unwrap()
                .sequence_file_mut()
                .unwrap()
                .mark_used(index)
                .unwrap();
            assert_eq!(marked.line, 1);
        }
    }
    assert_eq!(
        std::fs::read_to_string(&ssh).unwrap(),
        "#80:tcp,443:tcp,53:udp\n 81:tcp,444:tcp,54:udp\n 82:tcp,445:tcp,55:udp\n"
    );
    // The used sequence no longer opens; the next one does.
    assert!(opened(&knock(&mut m, 200, &first)).is_empty());
    assert_eq!(
        opened(&knock(
            &mut m,
            300,
            &[Step::tcp(81), Step::tcp(444), Step::udp(54)]
        ))
        .len(),
        1
    );
    // A reload sees two sequences left.
    let c2 = Config::from_knockd_str(&conf, "/etc/knockd.conf").unwrap();
    assert_eq!(c2.doors[0].sequence_file().unwrap().sequences().len(), 2);
}

#[test]
fn exhausted_one_time_door_is_disabled_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let otp = crate::write(dir.path(), "otp", "#1000\n#2000\n");
    let conf = format!(
        "[a]\n sequence = 1,2\n[b]\n one_time_sequences = {}\n",
        otp.display()
    );
    let c = Config::from_knockd_str(&conf, "k.conf").unwrap();
    assert!(c.doors[1].core_door().is_none());
    assert_eq!(c.core_doors().len(), 1);
}

#[test]
fn knockd_quirks_we_keep() {
    let conf = "[options]\n\tUseSyslog\n[Door]\n  SEQUENCE = 7000:UDP , 8000\n  Command = echo a=b # not a comment\n  # a comment\n  TIMEOUT = 7\n  Start_Command_6 = echo six\n  stop_command_6 = echo stop six\n  TARGET = 2001:db8::1\n";
    let c = Config::from_knockd_str(conf, "k.conf").unwrap();
    let d = &c.doors[0];
    assert_eq!(
        d.sequence,
        SequenceSource::Inline(vec![Step::udp(7000), Step::tcp(8000)])
    );
    assert_eq!(d.start_command.as_deref(), Some("echo a=b # not a comment"));
    assert_eq!(d.seq_timeout, Duration::from_secs(7));
    assert_eq!(d.start_command_for(true), Some("echo six"));
    assert_eq!(d.start_command_for(false), Some("echo a=b # not a comment"));
    assert_eq!(d.stop_command_for(false), None);
    assert_eq!(d.stop_command_for(true), Some("echo stop six"));
    assert_eq!(d.grant_lifetime(), Some(Duration::from_secs(10)));
    assert_eq!(d.target, Some("2001:db8::1".parse().unwrap()));
}

#[test]
fn extension_keys() {
    let conf = "[options]
  Interface = eth0, wg0
  blacklist = 3 invalid in 60s for 3m
  blacklist_reach = Host
[web]
  sequence = 1111,2222
  open = tcp/22,udp/1194
  firewall = iptables
  grant_prefix = 24,64
  allow_repeat = yes
  cooldown = 30
  from = 198.18.0.0/15, 2001:db8::/32, 203.0.113.7
  strict = yes
  cmd_timeout = 500ms
[derived]
  sequence_secret_file = /etc/knock.key
  sequence_length = 4
  sequence_period = 1m
  sequence_ports = 10000-60000
  sequence_protocols = tcp,udp
";
    // Parse only: the secret file is not there.
    let c = Config::parse_knockd_str(conf, "k.conf").unwrap();
    assert_eq!(c.options.interfaces, ["eth0", "wg0"]);
    let b = c.options.blacklist.unwrap();
    assert_eq!(
        (b.invalid, b.window, b.block),
        (3, Duration::from_secs(60), Duration::from_secs(180))
    );
    assert_eq!(c.options.blacklist_reach, BlacklistReach::Host);
    let plain = Config::parse_knockd_str(
        "[options]\n  blacklist = 3 invalid in 60s for 3m\n",
        "k.conf",
    );
    assert_eq!(
        plain.unwrap().options.blacklist_reach,
        BlacklistReach::Doors
    );
    // The doors' native `open` ports, each once: what the default reach blocks.
    assert_eq!(c.protected_ports(), [Step::tcp(22), Step::udp(1194)]);
    let w = &c.doors[0];
    assert_eq!(w.open, [Step::tcp(22), Step::udp(1194)]);
    assert_eq!(w.firewall, FirewallKind::Iptables);
    assert_eq!((w.grant_prefix.v4, w.grant_prefix.v6), (24, 64));
    assert_eq!(w.grant_prefix.network(ME).to_string(), "198.18.0.0/24");
    assert!(w.allow_repeat && w.strict);
    assert_eq!(w.cooldown, Duration::from_secs(30));
    assert_eq!(
        w.from.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        ["198.18.0.0/15", "2001:db8::/32", "203.0.113.7/32"]
    );
    let core = w.core_door().unwrap();
    assert_eq!(core.grant_lifetime, Some(Duration::from_millis(500)));
    assert!(core.allow_repeat);
    assert_eq!(core.cooldown, Duration::from_secs(30));
    assert_eq!(core.from, w.from);
    let SequenceSource::Derived(d) = &c.doors[1].sequence else {
        panic!()
    };
    assert_eq!(d.secret_file.to_str(), Some("/etc/knock.key"));
    assert_eq!(
        (d.length, d.period, d.ports.clone()),
        (4, Duration::from_secs(60), 10000..=60000)
    );
    assert_eq!(
        d.protocols,
        [knock_core::Proto::Tcp, knock_core::Proto::Udp]
    );
    // A derived door is a windowed core door, without windows until the
    // daemon derives them; `strict` reaches the core.
    assert!(c.doors[1].core_door().unwrap().is_windowed());
    assert!(c.doors[0].core_door().unwrap().strict);
    assert_eq!(c.core_doors().len(), 2);
}
