//! The daemon runtime (`knock::daemon`) against mocked firewall sinks and a
//! scripted capture source: the seams between crates, no kernel needed.

// Test code: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::BorrowedFd;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use knock::capture::{CaptureError, Captured, LinkType, Next, Source, Stats};
use knock::config::{Config, FirewallKind};
use knock::core::{Event, Listen, TcpFlags, Timestamp};
use knock::daemon::{BoxedSink, Daemon, DaemonOptions, Logger};
use knock_firewall::{Error, MockFirewallSink};
use mockall::predicate::function;

const ME: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));

/// Knocks handed out one by one; then it waits for deadlines like a live
/// source would (sleeping until them), `idle_deadlines` times, and ends.
/// `queued`: all of them are already queued when the first is read, so
/// that the rest come from `next_queued` (a batch), each passed or dropped
/// by the listen set in force when it is read, as a live source's filter
/// does.
struct Scripted {
    knocks: VecDeque<(u16, TcpFlags)>,
    idle_deadlines: usize,
    listen: Vec<Listen>,
    queued: bool,
}

impl Scripted {
    fn captured(port: u16, flags: TcpFlags) -> Captured {
        Captured {
            event: Event::tcp(ME, SERVER, port, flags, Timestamp::ZERO),
            link: LinkType::Ethernet,
            ifindex: 1,
            payload: None,
        }
    }
}

impl Source for Scripted {
    fn next_queued(&mut self) -> Option<Captured> {
        while self.queued {
            let (port, flags) = self.knocks.pop_front()?;
            let c = Self::captured(port, flags);
            if self.listen.iter().any(|l| l.matches(&c.event)) {
                return Some(c);
            }
        }
        None
    }
    fn next_event(&mut self, deadline: Option<Instant>) -> Result<Next, CaptureError> {
        if let Some((port, flags)) = self.knocks.pop_front() {
            return Ok(Next::Event(Self::captured(port, flags)));
        }
        match (deadline, self.idle_deadlines) {
            (Some(d), n) if n > 0 => {
                self.idle_deadlines -= 1;
                std::thread::sleep(d.saturating_duration_since(Instant::now()));
                Ok(Next::Deadline)
            }
            _ => Ok(Next::End),
        }
    }
    fn set_listen(&mut self, listen: &[Listen]) -> Result<(), CaptureError> {
        self.listen = listen.to_vec();
        Ok(())
    }
    fn stats(&mut self) -> Stats {
        Stats::default()
    }
    fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

/// A mock sink that expects the start-up reconcile.
fn mock_sink() -> MockFirewallSink {
    let mut sink = MockFirewallSink::new();
    sink.expect_reconcile()
        .times(1)
        .returning(|_| Ok(Default::default()));
    sink
}

/// Options with the state directory in `dir`.
fn options(dir: &tempfile::TempDir) -> DaemonOptions {
    let mut opts = DaemonOptions::default();
    opts.state_dir = dir.path().to_owned();
    opts
}

fn daemon(conf: &str, sinks: Vec<(FirewallKind, BoxedSink)>, dir: &tempfile::TempDir) -> Daemon {
    let config = Config::from_knockd_str(conf, "test.conf").unwrap();
    let log = Logger::new(None, false).unwrap();
    let sinks: HashMap<_, _> = sinks.into_iter().collect();
    Daemon::with_sinks(config, sinks, options(dir), log).unwrap()
}

fn run(d: &mut Daemon, knocks: &[u16], idle_deadlines: usize) -> Vec<Listen> {
    run_as(d, knocks, idle_deadlines, false)
}

/// [`run`], with every knock queued behind the first (one batch).
fn run_queued(d: &mut Daemon, knocks: &[u16]) -> Vec<Listen> {
    run_as(d, knocks, 0, true)
}

fn run_as(d: &mut Daemon, knocks: &[u16], idle_deadlines: usize, queued: bool) -> Vec<Listen> {
    let mut src = Scripted {
        knocks: knocks.iter().map(|&p| (p, TcpFlags::SYN)).collect(),
        idle_deadlines,
        listen: Vec::new(),
        queued,
    };
    let stop = AtomicBool::new(false);
    let reload = AtomicBool::new(false);
    d.run(&mut src, &stop, &reload, || Err("no reload".into()))
        .unwrap();
    src.listen
}

const NATIVE: &str = "
[ssh]
    sequence    = 7000,8000
    open        = tcp/22
    firewall    = nftables
    cmd_timeout = 1
    grant_prefix = 24,64
";

#[test]
fn open_then_close_reach_the_sink_with_the_door_s_grant() {
    let mut sink = mock_sink();
    let is_mine = |g: &knock_firewall::Grant| {
        g.door == "ssh"
            && g.src == ME
            && g.ports == vec![knock::core::Step::tcp(22)]
            && g.cidr() == "198.18.0.0/24"
    };
    let mut seq = mockall::Sequence::new();
    sink.expect_open()
        .with(function(is_mine))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|g| {
            assert!(g.expires.is_some(), "a door with cmd_timeout has an expiry");
            Ok(())
        });
    sink.expect_close()
        .with(function(is_mine))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    let dir = tempfile::tempdir().unwrap();
    let mut d = daemon(NATIVE, vec![(FirewallKind::Nftables, Box::new(sink))], &dir);
    let t = Instant::now();
    let listen = run(&mut d, &[7000, 8000], 1);
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "closed after cmd_timeout, not before"
    );
    assert_eq!(
        listen.iter().map(|l| l.port).collect::<Vec<_>>(),
        vec![7000, 8000]
    );
    // The mock checks the expectations when the daemon (and the sink) drops.
}

#[test]
fn a_failing_sink_is_logged_and_the_daemon_goes_on() {
    let mut sink = mock_sink();
    sink.expect_open().times(1).returning(|g| {
        Err(Error::Unsupported {
            what: format!("open {g}"),
            sink: "test",
        })
    });
    // The re-knock extends the grant, which gives the sink another chance.
    sink.expect_extend().times(1).returning(|_| Ok(()));
    sink.expect_close().times(0..).returning(|_| Ok(()));
    let dir = tempfile::tempdir().unwrap();
    let mut d = daemon(NATIVE, vec![(FirewallKind::Nftables, Box::new(sink))], &dir);
    run(&mut d, &[7000, 8000, 7000, 8000], 0);
    assert_eq!(d.matcher().stats().opens + d.matcher().stats().extended, 2);
}

#[test]
fn wrong_order_never_reaches_the_sink() {
    let mut sink = mock_sink();
    sink.expect_open().times(0);
    sink.expect_close().times(0);
    let dir = tempfile::tempdir().unwrap();
    let mut d = daemon(NATIVE, vec![(FirewallKind::Nftables, Box::new(sink))], &dir);
    run(&mut d, &[8000, 7000, 7000], 0);
    assert_eq!(d.matcher().stats().invalidated, 1);
}

/// A daemon with a one-time door over `once.seq` in `dir` (7000,8000 then
/// 7100,8100), whose sink expects one open and `extends` extensions (a
/// second sequence while the grant is open).
fn one_time_daemon(dir: &tempfile::TempDir, extends: usize) -> (Daemon, std::path::PathBuf) {
    let file = dir.path().join("once.seq");
    std::fs::write(&file, " 7000,8000\n 7100,8100\n").unwrap();
    let conf = format!(
        "[once]\n one_time_sequences = {}\n open = tcp/22\n firewall = nftables\n cmd_timeout = 5\n",
        file.display()
    );
    let mut sink = mock_sink();
    sink.expect_open().times(1).returning(|_| Ok(()));
    sink.expect_extend().times(extends).returning(|_| Ok(()));
    sink.expect_close().times(0..).returning(|_| Ok(()));
    let mut config = Config::from_knockd_str(&conf, "test.conf").unwrap();
    config.load_sequence_files("test.conf").unwrap();
    let sinks: HashMap<FirewallKind, BoxedSink> =
        [(FirewallKind::Nftables, Box::new(sink) as BoxedSink)].into();
    let d = Daemon::with_sinks(
        config,
        sinks,
        options(dir),
        Logger::new(None, false).unwrap(),
    )
    .unwrap();
    (d, file)
}

#[test]
fn a_batch_behind_a_one_time_open_is_filtered_with_the_next_sequence() {
    // The second sequence's knocks are queued right behind the first's:
    // the capture must read them with the filter of the next sequence,
    // not the one in force when the batch began.
    let dir = tempfile::tempdir().unwrap();
    let (mut d, file) = one_time_daemon(&dir, 1);
    let listen = run_queued(&mut d, &[7000, 8000, 7100, 8100]);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "#7000,8000\n#7100,8100\n"
    );
    assert!(listen.is_empty(), "every sequence used: {listen:?}");
}

#[test]
fn a_long_batch_is_handled_in_order() {
    // Enough knocks in one batch for the daemon to read ahead: wrong
    // knocks, then the sequence, then more after its open.
    let dir = tempfile::tempdir().unwrap();
    let mut sink = mock_sink();
    sink.expect_open().times(1).returning(|_| Ok(()));
    sink.expect_close().times(0..).returning(|_| Ok(()));
    let mut d = daemon(NATIVE, vec![(FirewallKind::Nftables, Box::new(sink))], &dir);
    let mut knocks = vec![8000; 100];
    knocks.extend([7000, 8000]);
    knocks.extend([8000; 100]);
    run_queued(&mut d, &knocks);
    let stats = d.matcher().stats();
    assert_eq!(stats.events, 202);
    assert_eq!(stats.opens, 1);
}

#[test]
fn one_time_sequence_is_marked_in_its_file_and_the_filter_follows() {
    let dir = tempfile::tempdir().unwrap();
    let (mut d, file) = one_time_daemon(&dir, 0);
    let listen = run(&mut d, &[7000, 8000, 7000, 8000], 0);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "#7000,8000\n 7100,8100\n"
    );
    assert_eq!(
        listen.iter().map(|l| l.port).collect::<Vec<_>>(),
        vec![7100, 8100],
        "filter swapped"
    );
}

#[test]
fn a_fifo_as_state_file_stops_start_up_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("engine.state");
    nix::unistd::mkfifo(&state, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let log_file = dir.path().join("knockd.log");
    let (tx, rx) = std::sync::mpsc::channel();
    let (opts, log_path) = (options(&dir), log_file.clone());
    std::thread::spawn(move || {
        let config = Config::from_knockd_str(NATIVE, "test.conf").unwrap();
        let sinks: HashMap<FirewallKind, BoxedSink> = [(
            FirewallKind::Nftables,
            Box::new(MockFirewallSink::new()) as BoxedSink,
        )]
        .into();
        let log = Logger::new(Some(&log_path), false).unwrap();
        // The daemon (and its log) is dropped here: the log is flushed.
        let started = Daemon::with_sinks(config, sinks, opts, log).map(|_| ());
        let _ = tx.send(started.map_err(|e| e.to_string()));
    });
    let started = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("start-up blocked on the FIFO");
    let e = started.unwrap_err();
    let shown = state.display().to_string();
    assert!(
        e.contains(&shown) && e.contains("not a regular file (a FIFO)"),
        "{e}"
    );
    let log = std::fs::read_to_string(&log_file).unwrap();
    assert!(log.contains(&e), "{log}");
}

#[test]
fn the_metrics_snapshot_counts_by_door_and_adds_up_to_the_matcher() {
    let conf = "
[ssh]
    sequence    = 7000,8000
    open        = tcp/22
    firewall    = nftables
    cmd_timeout = 60

[web]
    sequence    = 7100,8100
    open        = tcp/443
    firewall    = nftables
    cmd_timeout = 60
";
    let mut sink = mock_sink();
    sink.expect_open().times(2).returning(|_| Ok(()));
    sink.expect_close().times(0..).returning(|_| Ok(()));
    let dir = tempfile::tempdir().unwrap();
    let mut d = daemon(conf, vec![(FirewallKind::Nftables, Box::new(sink))], &dir);
    // ssh opens; web is invalidated once (8000 is not its next step), then opens.
    let mut src = Scripted {
        knocks: [7000, 8000, 7100, 8000, 7100, 8100]
            .iter()
            .map(|&p| (p, TcpFlags::SYN))
            .collect(),
        idle_deadlines: 0,
        listen: Vec::new(),
        queued: false,
    };
    let stop = AtomicBool::new(false);
    let reload = AtomicBool::new(false);
    d.run(&mut src, &stop, &reload, || Err("no reload".into()))
        .unwrap();
    let snap = d.metrics_snapshot(&mut src);
    let door = |name: &str| snap.doors.iter().find(|m| m.name == name).unwrap();
    assert_eq!(
        snap.doors
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>(),
        ["ssh", "web"]
    );
    assert_eq!((door("ssh").stats.opens, door("ssh").grants_open), (1, 1));
    assert_eq!((door("web").stats.opens, door("web").grants_open), (1, 1));
    assert_eq!(door("ssh").stats.stages, 2);
    let m = d.matcher().stats();
    let sum = |f: fn(&knock::engine::DoorStats) -> u64| {
        snap.doors.iter().map(|x| f(&x.stats)).sum::<u64>()
    };
    assert_eq!(sum(|s| s.opens), m.opens);
    assert_eq!(sum(|s| s.stages), m.stages);
    assert_eq!(sum(|s| s.invalidations), m.invalidated);
    assert!(m.invalidated >= 1, "{m:?}");
    let text = snap.encode().unwrap();
    assert!(
        text.contains("knock_door_opens_total{door=\"web\"} 1"),
        "{text}"
    );
    assert!(!text.contains("198.18."), "{text}");
}

#[test]
fn a_door_on_a_firewall_not_built_in_is_refused() {
    let config = Config::from_knockd_str(NATIVE, "test.conf").unwrap();
    let checked = knock::daemon::check_built(&config);
    if cfg!(feature = "nftables") {
        checked.unwrap();
    } else {
        // Without the nftables feature (the build with no GPL code), such a
        // door could never open: refused, naming the door and the way out.
        let e = checked.unwrap_err().to_string();
        assert!(
            e.contains("[ssh]") && e.contains("nftables") && e.contains("iptables"),
            "{e}"
        );
    }
    let commands =
        Config::from_knockd_str("[c]\n sequence = 1,2\n start_command = true\n", "test.conf")
            .unwrap();
    knock::daemon::check_built(&commands).unwrap();
}
