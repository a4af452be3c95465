//! The engine (`knock::engine`) driven with a fake clock: grants, restarts,
//! reloads, retries, blocks, windows and one-time sequences, without
//! sleeping and without touching anything.

// Test code: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(feature = "engine")]

use std::net::IpAddr;
use std::time::Duration;

use knock::config::Config;
use knock::core::{Event, Step, TcpFlags, Timestamp};
use knock::engine::{
    Action, Applied, Durability, Engine, EngineOptions, How, Level, Now, Snapshot,
};

const EPOCH: u64 = 1_700_000_000;

fn me() -> IpAddr {
    "198.18.0.2".parse().unwrap()
}
fn server() -> IpAddr {
    "198.18.0.1".parse().unwrap()
}

/// `ms` milliseconds into a process whose monotonic clock started at
/// Unix time `EPOCH + boot` seconds.
fn at(boot: u64, ms: u64) -> Now {
    Now::new(
        Timestamp::from_millis(ms),
        Duration::from_secs(EPOCH + boot) + Duration::from_millis(ms),
    )
}

const COMMANDS: &str = "
[ssh]
    sequence      = 7000,8000
    cmd_timeout   = 4
    start_command = iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
    stop_command  = iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
";

fn engine(conf: &str, now: Now) -> Engine {
    let config = Config::from_knockd_str(conf, "test.conf").unwrap();
    Engine::new(config, EngineOptions::default(), now).unwrap()
}

fn knock(e: &mut Engine, now: Now, ports: &[u16]) -> Vec<Action> {
    let mut out = Vec::new();
    for &p in ports {
        e.handle_event(now, &Event::tcp(me(), server(), p, TcpFlags::SYN, now.mono));
        out.extend(drain(e));
    }
    out
}

fn syn(src: IpAddr, port: u16) -> Event {
    Event::tcp(src, server(), port, TcpFlags::SYN, Timestamp::ZERO)
}

fn drain(e: &mut Engine) -> Vec<Action> {
    std::iter::from_fn(|| e.poll_action()).collect()
}

/// Runs the engine's timers up to `until` (ms, same boot), each at its time.
fn run_until(e: &mut Engine, boot: u64, until_ms: u64) -> Vec<Action> {
    let mut out = Vec::new();
    while let Some(t) = e.poll_timeout() {
        if t.as_millis() > until_ms {
            break;
        }
        e.handle_timeout(at(boot, t.as_millis()));
        out.extend(drain(e));
    }
    out
}

fn opens(a: &[Action]) -> Vec<&knock::engine::GrantAction> {
    a.iter()
        .filter_map(|a| match a {
            Action::Open(g) => Some(g),
            _ => None,
        })
        .collect()
}

fn closes(a: &[Action]) -> Vec<&knock::engine::GrantAction> {
    a.iter()
        .filter_map(|a| match a {
            Action::Close(g) => Some(g),
            _ => None,
        })
        .collect()
}

fn last_snapshot(a: &[Action]) -> Option<Snapshot> {
    a.iter().rev().find_map(|a| match a {
        Action::Persist(s, _) => Some(s.clone()),
        _ => None,
    })
}

fn command(g: &knock::engine::GrantAction) -> &str {
    match &g.how {
        How::Command { command } => command,
        other => panic!("not a command: {other:?}"),
    }
}

fn confirm_closes(e: &mut Engine, now: Now, a: &[Action]) -> Vec<Action> {
    for g in closes(a) {
        e.handle_applied(now, Applied::Close(g.grant), Ok(()));
    }
    drain(e)
}

#[test]
fn a_grant_is_persisted_before_its_door_opens_and_closes_on_time() {
    let mut e = engine(COMMANDS, at(0, 0));
    drain(&mut e);
    let a = knock(&mut e, at(0, 1000), &[7000, 8000]);
    let persist = a.iter().position(|a| matches!(a, Action::Persist(..)));
    let open = a.iter().position(|a| matches!(a, Action::Open(_)));
    assert!(persist.unwrap() < open.unwrap(), "{a:?}");
    // A plain grant needs no fsync before its open: the file survives a
    // crash of the process, and a power loss takes the firewall's state too.
    assert!(
        a.iter()
            .all(|a| !matches!(a, Action::Persist(_, Durability::Synced))),
        "{a:?}"
    );
    let s = last_snapshot(&a).unwrap();
    assert_eq!(s.grants.len(), 1);
    assert_eq!(s.grants[0].until_ms, (EPOCH + 5) * 1000);
    assert_eq!(
        command(opens(&a)[0]),
        "iptables -I INPUT -s 198.18.0.2 -p tcp --dport 22 -j ACCEPT"
    );
    assert!(run_until(&mut e, 0, 4999)
        .iter()
        .all(|a| !matches!(a, Action::Close(_))));
    let a = run_until(&mut e, 0, 5000);
    assert_eq!(
        command(closes(&a)[0]),
        "iptables -D INPUT -s 198.18.0.2 -p tcp --dport 22 -j ACCEPT"
    );
    // Until the stop command is confirmed, the snapshot keeps the grant.
    assert!(last_snapshot(&a).unwrap().grants[0].closing);
    let a = confirm_closes(&mut e, at(0, 5010), &a);
    assert!(last_snapshot(&a).unwrap().grants.is_empty());
    // The rest is the matcher's housekeeping (the source's idle record).
    let later = run_until(&mut e, 0, 60_000);
    assert!(
        later
            .iter()
            .all(|a| !matches!(a, Action::Close(_) | Action::Persist(..))),
        "{later:?}"
    );
    assert_eq!(e.poll_timeout(), None, "nothing left to do");
}

/// Where in `a` the first action matching `f` is.
fn position_of(a: &[Action], f: impl Fn(&Action) -> bool) -> usize {
    a.iter()
        .position(f)
        .unwrap_or_else(|| panic!("not in {a:?}"))
}

#[test]
fn an_nftables_grant_that_expires_in_the_kernel_opens_before_its_snapshot_is_written() {
    // The element carries a kernel timeout: if the process dies between
    // the open and the write, the kernel still closes it on time (and the
    // next start's reconcile keeps it only until then). So the open does
    // not wait for the file.
    let conf =
        "[ssh]\n sequence = 7000,8000\n open = tcp/22\n firewall = nftables\n cmd_timeout = 10\n";
    let mut e = engine(conf, at(0, 0));
    drain(&mut e);
    let a = knock(&mut e, at(0, 1000), &[7000, 8000]);
    let open = position_of(&a, |a| matches!(a, Action::Open(_)));
    let persist = position_of(&a, |a| matches!(a, Action::Persist(_, Durability::Written)));
    assert!(open < persist, "{a:?}");
    assert_eq!(last_snapshot(&a).unwrap().grants.len(), 1);
    // Its close is recorded before it is applied: a close that a crash
    // kept from the file would be opened again by the next start.
    let a = run_until(&mut e, 0, 11_000);
    let close = position_of(&a, |a| matches!(a, Action::Close(_)));
    let persist = position_of(&a, |a| matches!(a, Action::Persist(..)));
    assert!(persist < close, "{a:?}");
}

#[test]
fn grants_nothing_else_closes_are_written_before_they_open() {
    // A command and an iptables rule (its end is only a comment the next
    // start reads) would stay open after a crash that lost them: the
    // snapshot comes first.
    for conf in [
        COMMANDS,
        "[ssh]\n sequence = 7000,8000\n open = tcp/22\n firewall = iptables\n cmd_timeout = 10\n",
    ] {
        let mut e = engine(conf, at(0, 0));
        drain(&mut e);
        let a = knock(&mut e, at(0, 1000), &[7000, 8000]);
        let open = position_of(&a, |a| matches!(a, Action::Open(_)));
        let persist = position_of(&a, |a| matches!(a, Action::Persist(..)));
        assert!(persist < open, "{conf}: {a:?}");
    }
}

#[test]
fn a_restart_keeps_the_grant_a_second_knock_extends_it_and_it_closes_once() {
    // First run: knock at 1 s, killed at 2 s (the last snapshot is what
    // the disk holds).
    let mut e = engine(COMMANDS, at(0, 0));
    let a = knock(&mut e, at(0, 1000), &[7000, 8000]);
    let first = opens(&a)[0].grant;
    let snapshot = last_snapshot(&a).unwrap();
    drop(e);

    // Second run, booted at Unix EPOCH+2 (its monotonic clock restarts).
    let mut e = engine(COMMANDS, at(2, 0));
    e.restore(at(2, 0), snapshot.clone());
    let a = drain(&mut e);
    assert!(opens(&a).is_empty() && closes(&a).is_empty(), "{a:?}");
    // The knock within cmd_timeout extends the restored grant: no second start.
    let a = knock(&mut e, at(2, 500), &[7000, 8000]);
    assert!(opens(&a).is_empty(), "no second start command: {a:?}");
    // It closes once, at the extended end (2.5 s + 4 s after boot).
    let a = run_until(&mut e, 2, 10_000);
    let c = closes(&a);
    assert_eq!(c.len(), 1, "{a:?}");
    assert_eq!(c[0].grant, first, "the restored grant keeps its id");
    assert_eq!(
        c[0].until,
        Some(Duration::from_millis((EPOCH + 2) * 1000 + 4500))
    );
    // A new grant after the restart gets a new id.
    confirm_closes(&mut e, at(2, 6600), &a);
    let a = knock(&mut e, at(2, 7000), &[7000, 8000]);
    assert!(opens(&a)[0].grant > first);
    assert!(last_snapshot(&a).unwrap().next_grant > opens(&a)[0].grant);
}

#[test]
fn an_overdue_or_unconfirmed_close_runs_at_once_after_a_restart() {
    let mut e = engine(COMMANDS, at(0, 0));
    let a = knock(&mut e, at(0, 1000), &[7000, 8000]);
    let snapshot = last_snapshot(&a).unwrap();
    // Restarted long after the grant's end.
    let mut e = engine(COMMANDS, at(60, 0));
    e.restore(at(60, 0), snapshot);
    let a = drain(&mut e);
    let c = closes(&a);
    assert_eq!(c.len(), 1);
    assert_eq!(
        command(c[0]),
        "iptables -D INPUT -s 198.18.0.2 -p tcp --dport 22 -j ACCEPT"
    );
    // Killed before the stop command was confirmed: closed again next time.
    let snapshot = last_snapshot(&a).unwrap();
    let mut e = engine(COMMANDS, at(61, 0));
    e.restore(at(61, 0), snapshot);
    assert_eq!(closes(&drain(&mut e)).len(), 1);
}

#[test]
fn a_failed_close_is_logged_as_an_error_and_tried_again() {
    let mut e = engine(COMMANDS, at(0, 0));
    knock(&mut e, at(0, 1000), &[7000, 8000]);
    let a = run_until(&mut e, 0, 5000);
    let g = closes(&a)[0].grant;
    e.handle_applied(at(0, 5100), Applied::Close(g), Err("exit 1".into()));
    let a = drain(&mut e);
    assert!(
        a.iter()
            .any(|a| matches!(a, Action::Log(Level::Error, l) if l.contains("close failed"))),
        "{a:?}"
    );
    let retry = e.poll_timeout().unwrap();
    assert_eq!(
        retry,
        Timestamp::from_millis(5100).saturating_add(knock::engine::CLOSE_RETRY)
    );
    let a = run_until(&mut e, 0, retry.as_millis());
    assert_eq!(closes(&a).len(), 1, "tried again");
}

#[test]
fn a_reload_keeps_grants_and_closes_them_as_they_were_opened() {
    let mut e = engine(COMMANDS, at(0, 0));
    knock(&mut e, at(0, 1000), &[7000, 8000]);
    let changed = COMMANDS.replace("-j ACCEPT\n", "-j ACCEPT # v2\n");
    let config = Config::from_knockd_str(&changed, "test.conf").unwrap();
    e.handle_reload(at(0, 2000), config).unwrap();
    let a = run_until(&mut e, 0, 6000);
    assert_eq!(
        command(closes(&a)[0]),
        "iptables -D INPUT -s 198.18.0.2 -p tcp --dport 22 -j ACCEPT"
    );
}

#[test]
fn native_doors_carry_their_ports_and_extend_in_the_firewall() {
    let conf = "[ssh]\n sequence = 7000,8000\n open = tcp/22\n firewall = nftables\n cmd_timeout = 10\n grant_prefix = 24,64\n";
    let mut e = engine(conf, at(0, 0));
    let a = knock(&mut e, at(0, 1000), &[7000, 8000]);
    match &opens(&a)[0].how {
        How::Native {
            ports, prefix_v4, ..
        } => {
            assert_eq!(ports, &vec![Step::tcp(22)]);
            assert_eq!(*prefix_v4, 24);
        }
        other => panic!("{other:?}"),
    }
    let a = knock(&mut e, at(0, 3000), &[7000, 8000]);
    assert!(
        a.iter().any(
            |a| matches!(a, Action::Extend(g) if g.until == Some(Duration::from_secs(EPOCH + 13)))
        ),
        "{a:?}"
    );
}

#[test]
fn a_restore_or_reload_asks_the_firewall_to_hold_native_grants_and_blocks_again() {
    let conf = "[options]\n blacklist = 2 invalid in 60s for 30s\n[ssh]\n sequence = 7000,8000,9000\n open = tcp/22\n firewall = nftables\n cmd_timeout = 20\n";
    let mut e = engine(conf, at(0, 0));
    assert_eq!(
        opens(&knock(&mut e, at(0, 1000), &[7000, 8000, 9000])).len(),
        1
    );
    // Another source strikes twice (a wrong second knock): blocked.
    let other: IpAddr = "198.18.0.9".parse().unwrap();
    for t in [1100, 1200] {
        e.handle_event(at(0, t), &syn(other, 7000));
        e.handle_event(at(0, t + 10), &syn(other, 9000));
    }
    let a = drain(&mut e);
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::Block { src, .. } if *src == other)),
        "{a:?}"
    );

    let held_again = |a: &[Action]| {
        let grant = a.iter().any(|x| {
            matches!(x, Action::Extend(g) if g.src == me()
                && g.until == Some(Duration::from_secs(EPOCH + 21))
                && matches!(g.how, How::Native { .. }))
        });
        let block = a
            .iter()
            .any(|x| matches!(x, Action::Block { src, .. } if *src == other));
        grant && block
    };
    let config = Config::from_knockd_str(conf, "test.conf").unwrap();
    e.handle_reload(at(0, 2000), config).unwrap();
    let a = drain(&mut e);
    assert!(held_again(&a), "after a reload: {a:?}");

    // A restart (a reboot emptied the kernel's sets): the same.
    let s = e.snapshot();
    let mut e = engine(conf, at(5, 0));
    e.restore(at(5, 0), s);
    let a = drain(&mut e);
    assert!(held_again(&a), "after a restore: {a:?}");
    assert!(opens(&a).is_empty(), "no second open: {a:?}");
}

#[test]
fn blocks_end_on_the_engine_s_clock_and_survive_a_restart() {
    let conf = "[options]\n blacklist = 2 invalid in 60s for 30s\n[ssh]\n sequence = 7000,8000,9000\n open = tcp/22\n";
    let mut e = engine(conf, at(0, 0));
    // Two wrong second knocks: two strikes.
    let mut a = knock(&mut e, at(0, 1000), &[7000, 9000]);
    a.extend(knock(&mut e, at(0, 1100), &[7000, 9000]));
    let (src, until) = a
        .iter()
        .find_map(|a| match a {
            Action::Block { src, until } => Some((*src, *until)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("blocked: {a:?}"));
    assert_eq!(src, me());
    assert_eq!(until, Duration::from_millis((EPOCH + 31) * 1000 + 100));
    let s = last_snapshot(&a).unwrap();
    assert_eq!(s.blocks.len(), 1);
    // Restarted 10 s later: still blocked, and unblocked on time.
    let mut e = engine(conf, at(10, 0));
    e.restore(at(10, 0), s);
    drain(&mut e);
    let a = knock(&mut e, at(10, 100), &[7000, 8000, 9000]);
    assert!(
        opens(&a).is_empty(),
        "a blocked source's knocks are ignored"
    );
    let a = run_until(&mut e, 10, 30_000);
    assert!(
        a.iter()
            .any(|a| matches!(a, Action::Unblock { src } if *src == me())),
        "{a:?}"
    );
    assert!(!opens(&knock(&mut e, at(10, 30_000), &[7000, 8000, 9000])).is_empty());
}

#[test]
fn a_used_window_stays_used_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("ssh.key");
    std::fs::write(&secret, "correct horse battery staple\n").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let conf = format!(
        "[ssh]\n sequence_secret_file = {}\n sequence_length = 3\n open = tcp/22\n cmd_timeout = 5\n",
        secret.display()
    );
    let load = || {
        let mut c = Config::from_knockd_str(&conf, "test.conf").unwrap();
        c.load_sequence_files("test.conf").unwrap();
        c
    };
    let config = load();
    let door = config.door("ssh").unwrap().derived().unwrap().clone();
    let now = at(0, 0);
    let w = knock::config::derive::window_of(now.unix, door.period);
    let steps =
        knock::config::derive::derive(door.secret.as_ref().unwrap(), "ssh", &door, w).unwrap();
    let ports: Vec<u16> = steps.iter().map(|s| s.port).collect();
    let mut e = Engine::new(config, EngineOptions::default(), now).unwrap();
    let a = knock(&mut e, at(0, 100), &ports);
    assert_eq!(opens(&a).len(), 1, "{a:?}");
    let s = last_snapshot(&a).unwrap();
    assert_eq!(s.used_windows[0].windows, vec![w]);
    // Restarted within the same window: the sequence does not open again.
    let mut e = Engine::new(load(), EngineOptions::default(), at(1, 0)).unwrap();
    e.restore(at(1, 0), s);
    drain(&mut e);
    let a = knock(&mut e, at(1, 100), &ports);
    assert!(opens(&a).is_empty(), "{a:?}");
}

#[test]
fn a_one_time_sequence_is_marked_and_the_listen_set_follows() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("once.seq");
    std::fs::write(&file, " 7000,8000\n 7100,8100\n").unwrap();
    let conf = format!(
        "[once]\n one_time_sequences = {}\n open = tcp/22\n cmd_timeout = 5\n",
        file.display()
    );
    let mut config = Config::from_knockd_str(&conf, "test.conf").unwrap();
    config.load_sequence_files("test.conf").unwrap();
    let mut e = Engine::new(
        config,
        EngineOptions::default().with_reports(true),
        at(0, 0),
    )
    .unwrap();
    drain(&mut e);
    let a = knock(&mut e, at(0, 100), &[7000, 8000]);
    assert!(
        a.iter().any(|a| matches!(
            a,
            Action::MarkUsed {
                sequence,
                remaining: 1,
                ..
            } if sequence == &[Step::tcp(7000), Step::tcp(8000)]
        )),
        "{a:?}"
    );
    let listen = a
        .iter()
        .find_map(|a| match a {
            Action::Listen(l) => Some(l.iter().map(|l| l.port).collect::<Vec<_>>()),
            _ => None,
        })
        .unwrap();
    assert_eq!(listen, vec![7100, 8100]);
    let report = a
        .iter()
        .find_map(|a| match a {
            Action::Report(r) if r.event == "sequence_consumed" => Some(r.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(report.would_mark, Some(format!("{}:1", file.display())));
}

/// A one-time door with a command, its sequences read from `file`.
fn one_time_config(file: &std::path::Path) -> Config {
    let conf = format!(
        "[once]\n one_time_sequences = {}\n start_command = open %IP%\n cmd_timeout = 5\n",
        file.display()
    );
    let mut config = Config::from_knockd_str(&conf, "test.conf").unwrap();
    config.load_sequence_files("test.conf").unwrap();
    config
}

/// An engine for [`one_time_config`].
fn one_time_engine(file: &std::path::Path, now: Now) -> (Engine, Config) {
    let config = one_time_config(file);
    let e = Engine::new(config.clone(), EngineOptions::default(), now).unwrap();
    (e, config)
}

#[test]
fn a_used_one_time_sequence_is_persisted_and_marked_before_its_door_opens() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("once.seq");
    std::fs::write(&file, " 7000,8000\n 7100,8100\n").unwrap();
    let (mut e, _) = one_time_engine(&file, at(0, 0));
    drain(&mut e);
    let a = knock(&mut e, at(0, 100), &[7000, 8000]);
    let pos = |f: &dyn Fn(&Action) -> bool| a.iter().position(f).unwrap();
    let persist = pos(
        &|x| matches!(x, Action::Persist(s, Durability::Synced) if s.used_sequences.iter().any(|u| u.sequences == ["7000:tcp,8000:tcp"])),
    );
    let mark = pos(&|x| matches!(x, Action::MarkUsed { .. }));
    let open = pos(&|x| matches!(x, Action::Open(_)));
    assert!(persist < mark && mark < open, "{a:?}");
}

#[test]
fn a_used_one_time_sequence_stays_used_across_reload_and_restart_while_its_file_is_unmarked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("once.seq");
    // The file is never marked (as if every write failed).
    std::fs::write(&file, " 7000,8000\n 7100,8100\n").unwrap();
    let (mut e, config) = one_time_engine(&file, at(0, 0));
    drain(&mut e);
    assert_eq!(opens(&knock(&mut e, at(0, 100), &[7000, 8000])).len(), 1);

    // Reload: the file still lists the line as unused.
    e.handle_reload(at(0, 10_000), config).unwrap();
    let a = drain(&mut e);
    assert!(
        a.iter().any(
            |x| matches!(x, Action::MarkUsed { sequence, .. } if sequence[0] == Step::tcp(7000))
        ),
        "the owed mark is asked for again: {a:?}"
    );
    let src2: IpAddr = "198.18.0.9".parse().unwrap();
    for (i, port) in [7000u16, 8000].into_iter().enumerate() {
        e.handle_event(at(0, 11_000 + i as u64 * 100), &syn(src2, port));
    }
    assert!(
        opens(&drain(&mut e)).is_empty(),
        "a used sequence opened after a reload"
    );
    assert_eq!(
        e.listen_set().iter().map(|l| l.port).collect::<Vec<_>>(),
        vec![7100, 8100]
    );

    // Restart from the snapshot: still used; the next line still opens.
    let snapshot = e.snapshot();
    let (mut e, _) = one_time_engine(&file, at(1, 0));
    e.restore(at(1, 0), snapshot);
    drain(&mut e);
    for (i, port) in [7000u16, 8000].into_iter().enumerate() {
        e.handle_event(at(1, 100 + i as u64 * 100), &syn(src2, port));
    }
    assert!(
        opens(&drain(&mut e)).is_empty(),
        "a used sequence opened after a restart"
    );
    assert_eq!(opens(&knock(&mut e, at(1, 1000), &[7100, 8100])).len(), 1);

    // Once the file shows the line marked, the record lets it go.
    std::fs::write(&file, "#7000,8000\n#7100,8100\n 7200,8200\n").unwrap();
    e.handle_reload(at(1, 2000), one_time_config(&file))
        .unwrap();
    drain(&mut e);
    assert!(e.snapshot().used_sequences.is_empty(), "{:?}", e.snapshot());
}

#[test]
fn the_same_inputs_and_seed_give_the_same_actions() {
    let run = || {
        let config = Config::from_knockd_str(COMMANDS, "test.conf").unwrap();
        let mut e = Engine::new(
            config,
            EngineOptions::default().with_seed(42).with_reports(true),
            at(0, 0),
        )
        .unwrap();
        let mut out = format!("{:?}", drain(&mut e));
        for i in 0..200u64 {
            let src: IpAddr = format!("198.18.{}.{}", i % 7, i % 13).parse().unwrap();
            let port = [7000, 8000, 9000][(i % 3) as usize];
            let now = at(0, i * 100);
            e.handle_event(
                now,
                &Event::tcp(src, server(), port, TcpFlags::SYN, now.mono),
            );
            out += &format!("{:?}", drain(&mut e));
        }
        out += &format!("{:?}", run_until(&mut e, 0, 60_000));
        out
    };
    assert_eq!(run(), run());
}

mod crashes {
    //! A crash may come between any two applied actions; the next run
    //! restores the last snapshot written. Whatever the knocks, times and
    //! crash points, every rule a start command added is removed in the end.

    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        /// Source `i` knocks the whole sequence.
        Knock(u8),
        /// Time passes (ms).
        Wait(u16),
        /// The process dies after applying `k` of the next call's actions,
        /// and starts again `gap` ms later.
        CrashAfter(u8, u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..3).prop_map(Op::Knock),
            (0u16..6000).prop_map(Op::Wait),
            (0u8..8, 0u16..6000).prop_map(|(k, g)| Op::CrashAfter(k, g)),
        ]
    }

    /// The world: the ACCEPT rules in force (a multiset: `-I` twice needs
    /// `-D` twice) and the snapshot on disk.
    #[derive(Default)]
    struct World {
        rules: Vec<IpAddr>,
        disk: Option<Snapshot>,
    }

    impl World {
        /// Applies actions in order, up to `limit` of them; returns what the
        /// engine must be told (closes are confirmed at once).
        fn apply(&mut self, actions: Vec<Action>, limit: usize) -> Vec<Applied> {
            let mut done = Vec::new();
            for a in actions.into_iter().take(limit) {
                match a {
                    Action::Persist(s, _) => self.disk = Some(s),
                    Action::Open(g) => self.rules.push(g.src),
                    Action::Close(g) => {
                        if let Some(i) = self.rules.iter().position(|r| *r == g.src) {
                            self.rules.remove(i);
                        }
                        done.push(Applied::Close(g.grant));
                    }
                    _ => {}
                }
            }
            done
        }
    }

    /// One run of the process: booted at `boot` ms of Unix time.
    struct Run {
        engine: Engine,
        boot: u64,
    }

    impl Run {
        fn start(world: &World, boot: u64) -> Run {
            let now = Now::new(Timestamp::ZERO, Duration::from_millis(boot));
            let config = Config::from_knockd_str(COMMANDS, "test.conf").unwrap();
            let mut engine = Engine::new(config, EngineOptions::default(), now).unwrap();
            if let Some(s) = &world.disk {
                engine.restore(now, s.clone());
            }
            Run { engine, boot }
        }
        fn now(&self, unix_ms: u64) -> Now {
            Now::new(
                Timestamp::from_millis(unix_ms - self.boot),
                Duration::from_millis(unix_ms),
            )
        }
        /// Lets `ms` pass, firing every timer at its time; stops at a crash.
        fn advance(&mut self, world: &mut World, t: &mut u64, ms: u64, limit: usize) {
            let until = *t + ms;
            while let Some(next) = self.engine.poll_timeout() {
                let at = self.boot + next.as_millis();
                if at > until {
                    break;
                }
                *t = (*t).max(at);
                self.engine.handle_timeout(self.now(*t));
                if !self.settle(world, *t, limit) {
                    return;
                }
            }
            *t = until;
        }

        /// Applies everything pending (up to `limit` actions), feeding back.
        fn settle(&mut self, world: &mut World, unix_ms: u64, mut limit: usize) -> bool {
            loop {
                let actions = drain(&mut self.engine);
                if actions.is_empty() {
                    return true;
                }
                let n = actions.len();
                let done = world.apply(actions, limit);
                if n > limit {
                    return false; // crashed
                }
                limit -= n;
                for d in done {
                    self.engine.handle_applied(self.now(unix_ms), d, Ok(()));
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn no_rule_outlives_its_grant_across_crashes(ops in proptest::collection::vec(op(), 1..40)) {
            let mut world = World::default();
            let mut t = EPOCH * 1000;
            let mut run = Run::start(&world, t);
            run.settle(&mut world, t, usize::MAX);
            let mut crash: Option<(usize, u16)> = None;
            for op in ops {
                let limit = crash.map_or(usize::MAX, |c| c.0);
                match op {
                    Op::Knock(i) => {
                        let src: IpAddr = format!("198.18.0.{}", 10 + i).parse().unwrap();
                        for p in [7000, 8000] {
                            let now = run.now(t);
                            run.engine.handle_event(now, &Event::tcp(src, server(), p, TcpFlags::SYN, now.mono));
                        }
                        run.settle(&mut world, t, limit);
                    }
                    Op::Wait(ms) => run.advance(&mut world, &mut t, u64::from(ms), limit),
                    Op::CrashAfter(k, gap) => {
                        crash = Some((usize::from(k), gap));
                        continue;
                    }
                }
                // An armed crash happens during (or at the end of) this op.
                if let Some((_, gap)) = crash.take() {
                    t += u64::from(gap);
                    run = Run::start(&world, t);
                    run.settle(&mut world, t, usize::MAX);
                }
            }
            // The last run lives on: every grant ends.
            run.advance(&mut world, &mut t, 600_000, usize::MAX);
            prop_assert!(world.rules.is_empty(), "rules left: {:?}", world.rules);
        }
    }
}

#[test]
fn door_counts_follow_the_doors_a_reload_keeps() {
    let two = format!("{COMMANDS}\n[web]\n    sequence = 7100,8100\n    start_command = true\n");
    let mut e = engine(&two, at(0, 0));
    knock(&mut e, at(0, 1000), &[7000, 8000]);
    knock(&mut e, at(0, 1100), &[7100, 8100]);
    assert_eq!(e.door_stats("ssh").opens, 1);
    assert_eq!(e.door_stats("web").opens, 1);
    assert_eq!(e.door_stats("ssh").stages, 2);
    // The grant of ssh closes after cmd_timeout: one close, counted at ssh.
    let a = run_until(&mut e, 0, 6000);
    confirm_closes(&mut e, at(0, 6000), &a);
    assert_eq!(e.door_stats("ssh").closes, 1);
    // web is gone after the reload: its counts go with it; ssh keeps its.
    let config = Config::from_knockd_str(COMMANDS, "test.conf").unwrap();
    e.handle_reload(at(0, 7000), config).unwrap();
    assert_eq!(e.door_stats("web"), Default::default());
    assert_eq!(e.door_stats("ssh").opens, 1);
}

// ---- Single Packet Authorization ------------------------------------------

const SPA_KEY: &str = "ZxwCwpGiY1Iv/nzNSES5J5LjuyJ6VpuHvBjzhY2bvck=";
const SPA_HMAC: &str =
    "913yacJvmZCnAkEMp7qifH1iZ2fJpda27ZO2WLXNbIWtImTr3ITQBGCZWcSzjEJloNi/cyz13s+7LsyNiH4i8w==";

fn spa_conf() -> String {
    format!(
        "[spa]\n    spa_key_base64 = {SPA_KEY}\n    spa_hmac_key_base64 = {SPA_HMAC}\n    \
         cmd_timeout = 30\n    start_command = open %IP%\n    stop_command = close %IP%\n"
    )
}

/// An SPA packet made at Unix time `unix` asking tcp/22 for `addr`.
fn spa_packet(unix: u64, addr: &str, rand: u64) -> Vec<u8> {
    spa_packet_for(unix, addr, rand, &[Step::tcp(22)])
}

/// An SPA packet made at Unix time `unix` asking `ports` for `addr`.
fn spa_packet_for(unix: u64, addr: &str, rand: u64, ports: &[Step]) -> Vec<u8> {
    use knock::spa::{seal, Access, Keys, Message};
    let keys = Keys::from_base64(SPA_KEY, SPA_HMAC).unwrap();
    let access = Access {
        addr: Some(addr.parse().unwrap()),
        ports: ports.to_vec(),
    };
    let m = Message::access("alice", unix, access, rand);
    seal(&keys, m.plaintext().as_bytes(), [5; 8]).into_bytes()
}

fn spa_event(src: IpAddr, port: u16) -> Event {
    Event::udp(src, server(), port, Timestamp::ZERO)
}

#[test]
fn an_spa_request_opens_its_door_for_the_address_it_names_then_closes() {
    let now = at(0, 0);
    let mut e = engine(&spa_conf(), now);
    let listen = e.listen_set();
    assert!(listen.iter().any(|l| l.port == 62201), "{listen:?}");
    let packet = spa_packet(EPOCH, "198.18.0.9", 1);
    e.handle_datagram(now, &spa_event(me(), 62201), Some(&packet));
    let acts = drain(&mut e);
    let open = acts
        .iter()
        .find_map(|a| match a {
            Action::Open(g) => Some(g.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{acts:?}"));
    assert_eq!(open.src, "198.18.0.9".parse::<IpAddr>().unwrap());
    assert_eq!(
        open.how,
        How::Command {
            command: "open 198.18.0.9".into()
        }
    );
    // Persisted first, with the packet in the replay cache.
    let persisted = acts.iter().position(
        |a| matches!(a, Action::Persist(s, Durability::Synced) if s.spa_replay.len() == 1),
    );
    let opened = acts.iter().position(|a| matches!(a, Action::Open(_)));
    assert!(persisted.is_some() && persisted < opened, "{acts:?}");
    assert_eq!(e.poll_timeout(), Some(Timestamp::from_secs(30)));
    e.handle_timeout(at(0, 30_000));
    let closed = drain(&mut e)
        .into_iter()
        .any(|a| matches!(a, Action::Close(g) if g.how == How::Command { command: "close 198.18.0.9".into() }));
    assert!(closed);
    // A datagram to another port is a knock, not SPA.
    e.handle_datagram(at(0, 31_000), &spa_event(me(), 9999), Some(&packet));
    assert_eq!(e.spa_stats().unwrap().accepted, 1);
}

/// An SPA door with two native ports.
fn spa_two_ports_conf(extra: &str) -> String {
    format!(
        "[spa]\n    spa_key_base64 = {SPA_KEY}\n    spa_hmac_key_base64 = {SPA_HMAC}\n    \
         cmd_timeout = 30\n    open = tcp/22, tcp/80\n{extra}"
    )
}

/// An engine for one access.conf stanza with two ports and `commands`.
fn access_engine(commands: &str, now: Now) -> Engine {
    let text = format!(
        "SOURCE ANY\nOPEN_PORTS tcp/22, tcp/80\nKEY_BASE64 {SPA_KEY}\nHMAC_KEY_BASE64 {SPA_HMAC}\n\
         FW_ACCESS_TIMEOUT 30\n{commands}"
    );
    let mut config = Config::from_knockd_str("[options]\n", "test.conf").unwrap();
    config
        .doors
        .extend(Config::parse_access_conf_str(&text, "access.conf").unwrap());
    Engine::new(config, EngineOptions::default(), now).unwrap()
}

/// The opens among `acts`: door, source, how.
fn grants_opened(acts: &[Action]) -> Vec<(String, IpAddr, How)> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Open(g) => Some((g.door.to_string(), g.src, g.how.clone())),
            _ => None,
        })
        .collect()
}

fn native(ports: &[Step]) -> How {
    How::Native {
        firewall: knock::config::FirewallKind::Iptables,
        ports: ports.to_vec(),
        prefix_v4: 32,
        prefix_v6: 128,
    }
}

#[test]
fn an_spa_grant_opens_only_the_ports_the_request_asked_for() {
    let now = at(0, 0);
    let mut e = engine(&spa_two_ports_conf("    firewall = iptables\n"), now);
    let src: IpAddr = "198.18.0.9".parse().unwrap();
    let packet = spa_packet_for(EPOCH, "198.18.0.9", 1, &[Step::tcp(22)]);
    e.handle_datagram(now, &spa_event(me(), 62201), Some(&packet));
    let acts = drain(&mut e);
    assert_eq!(
        grants_opened(&acts),
        vec![("spa:tcp/22".to_owned(), src, native(&[Step::tcp(22)]))],
        "{acts:?}"
    );
    // One packet asking both opens both, as one replay-cache entry.
    let src2: IpAddr = "198.18.0.10".parse().unwrap();
    let packet = spa_packet_for(EPOCH, "198.18.0.10", 2, &[Step::tcp(22), Step::tcp(80)]);
    e.handle_datagram(at(0, 1000), &spa_event(me(), 62201), Some(&packet));
    let acts = drain(&mut e);
    assert_eq!(
        grants_opened(&acts),
        vec![
            ("spa:tcp/22".to_owned(), src2, native(&[Step::tcp(22)])),
            ("spa:tcp/80".to_owned(), src2, native(&[Step::tcp(80)])),
        ],
        "{acts:?}"
    );
    let persisted = acts.iter().rev().find_map(|a| match a {
        Action::Persist(s, _) => Some(s.spa_replay.len()),
        _ => None,
    });
    assert_eq!(persisted, Some(2), "{acts:?}");
    assert_eq!(e.spa_stats().unwrap().accepted, 2);
    // A port the door does not list refuses the whole request.
    let packet = spa_packet_for(EPOCH, "198.18.0.11", 3, &[Step::tcp(22), Step::tcp(23)]);
    e.handle_datagram(at(0, 2000), &spa_event(me(), 62201), Some(&packet));
    let acts = drain(&mut e);
    assert!(grants_opened(&acts).is_empty(), "{acts:?}");
    assert_eq!(e.spa_stats().unwrap().accepted, 2);
    // Each port's grant closes on its own time.
    e.handle_timeout(at(0, 30_000));
    let closed: Vec<String> = drain(&mut e)
        .into_iter()
        .filter_map(|a| match a {
            Action::Close(g) if g.src == src => Some(g.door.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(closed, vec!["spa:tcp/22".to_owned()]);
}

#[test]
fn spa_commands_get_the_port_and_protocol_of_each_port_asked_for() {
    let now = at(0, 0);
    let mut e = access_engine(
        "CMD_CYCLE_OPEN open $IP $PROTO $PORT\nCMD_CYCLE_CLOSE close $IP $PORT\n",
        now,
    );
    let packet = spa_packet_for(EPOCH, "198.18.0.9", 1, &[Step::tcp(80)]);
    e.handle_datagram(now, &spa_event(me(), 62201), Some(&packet));
    let acts = drain(&mut e);
    let src: IpAddr = "198.18.0.9".parse().unwrap();
    assert_eq!(
        grants_opened(&acts),
        vec![(
            "stanza1:tcp/80".to_owned(),
            src,
            How::Command {
                command: "open 198.18.0.9 6 80".into()
            }
        )],
        "{acts:?}"
    );
    e.handle_timeout(at(0, 30_000));
    let closed = drain(&mut e).into_iter().any(
        |a| matches!(a, Action::Close(g) if g.how == How::Command { command: "close 198.18.0.9 80".into() }),
    );
    assert!(closed);
}

#[test]
fn spa_commands_without_a_port_run_once_per_request() {
    let now = at(0, 0);
    let mut e = access_engine("CMD_CYCLE_OPEN open $IP\nCMD_CYCLE_CLOSE close $IP\n", now);
    let packet = spa_packet_for(EPOCH, "198.18.0.9", 1, &[Step::tcp(22), Step::tcp(80)]);
    e.handle_datagram(now, &spa_event(me(), 62201), Some(&packet));
    let acts = drain(&mut e);
    let src: IpAddr = "198.18.0.9".parse().unwrap();
    assert_eq!(
        grants_opened(&acts),
        vec![(
            "stanza1".to_owned(),
            src,
            How::Command {
                command: "open 198.18.0.9".into()
            }
        )],
        "{acts:?}"
    );
}

#[test]
fn the_replay_cache_survives_a_restart() {
    let now = at(0, 0);
    let mut e = engine(&spa_conf(), now);
    let packet = spa_packet(EPOCH, "198.18.0.2", 2);
    e.handle_datagram(now, &spa_event(me(), 62201), Some(&packet));
    drain(&mut e);
    let snap = Snapshot::from_bytes(&e.snapshot().to_bytes()).unwrap();
    assert_eq!(snap.spa_replay.len(), 1);

    // A new process, 10 s later, with the snapshot.
    let later = at(10, 0);
    let mut f = engine(&spa_conf(), later);
    f.restore(later, snap);
    drain(&mut f);
    f.handle_datagram(later, &spa_event(me(), 62201), Some(&packet));
    let acts = drain(&mut f);
    assert!(
        !acts.iter().any(|a| matches!(a, Action::Open(_))),
        "{acts:?}"
    );
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::Log(Level::Warn, l) if l.contains("replayed packet"))),
        "{acts:?}"
    );
    let stats = f.spa_stats().unwrap();
    assert_eq!(stats.rejected(knock::spa::Reject::Replay), 1);
    // Without the snapshot it would have opened: the cache is what refused it.
    let mut g = engine(&spa_conf(), later);
    g.handle_datagram(later, &spa_event(me(), 62201), Some(&packet));
    assert!(drain(&mut g).iter().any(|a| matches!(a, Action::Open(_))));
}

#[test]
fn junk_to_the_spa_port_is_counted_not_logged() {
    let now = at(0, 0);
    let mut e = engine(&spa_conf(), now);
    for i in 0..100u8 {
        let junk = vec![b'A' + (i % 26); 150 + usize::from(i)];
        e.handle_datagram(now, &spa_event(me(), 62201), Some(&junk));
    }
    let acts = drain(&mut e);
    assert!(
        !acts
            .iter()
            .any(|a| matches!(a, Action::Log(..) | Action::Persist(..))),
        "{acts:?}"
    );
    let s = e.spa_stats().unwrap();
    assert_eq!(s.rejected(knock::spa::Reject::Hmac), 100);
    assert!(e.snapshot().spa_replay.is_empty());
}

/// The capture is told to keep the data of datagrams to the SPA port, and
/// of no other: a knock door's UDP steps and a strict door's datagrams are
/// only their headers.
#[test]
fn only_the_spa_port_asks_for_datagram_payloads() {
    let conf = format!(
        "{}[knock]\n    sequence = 7000,9000:udp\n    cmd_timeout = 5\n    start_command = x\n\
         [sweep]\n    sequence = 7100,9100:udp\n    strict = yes\n    cmd_timeout = 5\n    \
         start_command = x\n",
        spa_conf()
    );
    let e = engine(&conf, at(0, 0));
    let listen = e.listen_set();
    let with_payload: Vec<(knock::core::Proto, u16)> = listen
        .iter()
        .filter(|l| l.payload)
        .map(|l| (l.proto, l.port))
        .collect();
    assert_eq!(
        with_payload,
        [(knock::core::Proto::Udp, 62201)],
        "{listen:?}"
    );
    assert!(listen.iter().any(|l| l.port == 9000), "{listen:?}");
    assert!(listen.iter().any(|l| l.any_port), "{listen:?}");
    // Without SPA doors no entry asks for data.
    let e = engine(
        "[knock]\n    sequence = 7000,9000:udp\n    cmd_timeout = 5\n    start_command = x\n",
        at(0, 0),
    );
    assert!(e.listen_set().iter().all(|l| !l.payload));
}

#[test]
fn a_knock_door_on_the_spa_port_is_refused() {
    let conf = format!(
        "{}[knock]\n    sequence = 7000,62201:udp\n    cmd_timeout = 5\n    start_command = x\n",
        spa_conf()
    );
    let config = Config::from_knockd_str(&conf, "test.conf").unwrap();
    let e = Engine::check(&config, knock::core::Limits::default()).unwrap_err();
    assert!(
        e.to_string().contains("door [knock] knocks on udp/62201"),
        "{e}"
    );
    assert!(Engine::new(config, EngineOptions::default(), at(0, 0)).is_err());
    // With another spa_port it is fine; without SPA doors too.
    let moved = format!("[options]\n    spa_port = 62202\n{conf}");
    let config = Config::from_knockd_str(&moved, "test.conf").unwrap();
    assert!(Engine::check(&config, knock::core::Limits::default()).is_ok());
}

#[test]
fn a_replayed_packet_in_a_loop_warns_once_a_second() {
    let mut e = engine(&spa_conf(), at(0, 0));
    let packet = spa_packet(EPOCH, "198.18.0.2", 3);
    e.handle_datagram(at(0, 0), &spa_event(me(), 62201), Some(&packet));
    drain(&mut e);
    let warns = |acts: &[Action]| -> Vec<String> {
        acts.iter()
            .filter_map(|a| match a {
                Action::Log(Level::Warn, l) => Some(l.clone()),
                _ => None,
            })
            .collect()
    };
    let mut lines = Vec::new();
    for i in 0..1000u64 {
        e.handle_datagram(at(0, i), &spa_event(me(), 62201), Some(&packet));
        lines.extend(warns(&drain(&mut e)));
    }
    assert_eq!(lines.len(), 1, "{lines:?}");
    e.handle_datagram(at(0, 1500), &spa_event(me(), 62201), Some(&packet));
    lines.extend(warns(&drain(&mut e)));
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[1].contains("(999 more refusals in the last second not logged)"),
        "{lines:?}"
    );
    assert_eq!(
        e.spa_stats().unwrap().rejected(knock::spa::Reject::Replay),
        1001
    );
}

#[test]
fn an_spa_door_without_a_close_still_persists_the_packet() {
    // A start command and no stop command: no grant to hold, but the packet
    // must be in the snapshot before the command runs (a restart must not
    // accept it again).
    let conf = format!(
        "[spa]\n    spa_key_base64 = {SPA_KEY}\n    spa_hmac_key_base64 = {SPA_HMAC}\n    start_command = open %IP%\n"
    );
    let mut e = engine(&conf, at(0, 0));
    drain(&mut e);
    let first = spa_packet(EPOCH, "198.18.0.2", 4);
    e.handle_datagram(at(0, 0), &spa_event(me(), 62201), Some(&first));
    drain(&mut e);
    // 200 s later the first packet has left the cache (its timestamp can no
    // longer pass the window) as the second enters it: one entry either way.
    let packet = spa_packet(EPOCH + 200, "198.18.0.2", 5);
    e.handle_datagram(at(0, 200_000), &spa_event(me(), 62201), Some(&packet));
    let acts = drain(&mut e);
    let persisted = acts
        .iter()
        .position(|a| matches!(a, Action::Persist(s, _) if s.spa_replay.len() == 1));
    let opened = acts.iter().position(|a| matches!(a, Action::Open(_)));
    assert!(persisted.is_some() && persisted < opened, "{acts:?}");
}

/// The log lines of `actions`.
fn log_lines(actions: &[Action]) -> Vec<(Level, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Log(l, s) => Some((*l, s.clone())),
            _ => None,
        })
        .collect()
}

/// A flood of first knocks from 20,000 sources: beyond a burst, their
/// `Stage 1` lines (and later their `sequence timeout` lines) are not
/// logged one by one but summarised every 10 s; the real knocker, whose
/// stage lines fell in the flood, gets them written before its open, and
/// its open and close are logged as always.
#[test]
fn a_flood_of_stage_lines_is_summarised_and_the_opener_keeps_its_stages() {
    let conf = "[ssh]\n sequence = 7000,8000,9000\n seq_timeout = 5\n cmd_timeout = 4\n \
                start_command = /bin/true %IP%\n stop_command = /bin/true %IP%\n";
    let mut e = engine(conf, at(0, 0));
    drain(&mut e);
    let mut out = Vec::new();
    for i in 0..20_000u32 {
        let src = IpAddr::V4(std::net::Ipv4Addr::from(0x6440_0000 + i));
        let now = at(0, u64::from(i / 10)); // 2 s of flood
        e.handle_event(now, &syn(src, 7000));
        out.extend(drain(&mut e));
        if i == 10_000 {
            out.extend(knock(&mut e, now, &[7000, 8000, 9000]));
        }
    }
    out.extend(run_until(&mut e, 0, 30_000));
    let lines = log_lines(&out);
    let spoofed = |l: &str| l.starts_with("100.");
    let stage1 = lines
        .iter()
        .filter(|(_, l)| spoofed(l) && l.ends_with(": Stage 1"))
        .count();
    assert!(stage1 < 200, "{stage1} Stage 1 lines");
    let summaries: Vec<&String> = lines
        .iter()
        .filter(|(l, s)| *l == Level::Warn && s.contains("suppressed"))
        .map(|(_, s)| s)
        .collect();
    assert!(
        !summaries.is_empty() && summaries.len() <= 3,
        "{summaries:?}"
    );
    // Every suppressed line is counted in a summary.
    let counted: u64 = summaries
        .iter()
        .map(|s| s.split(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    let timeouts = lines
        .iter()
        .filter(|(_, l)| spoofed(l) && l.contains("sequence timeout"))
        .count();
    // The spoofed sources' 20,000 stage and 20,000 timeout lines are all
    // written or counted (and so are the opener's, which may also be
    // written later, at its open).
    let spoofed_counted = counted.checked_sub(40_000 - (stage1 + timeouts) as u64);
    assert!(
        matches!(spoofed_counted, Some(0..=3)),
        "{summaries:?}, {stage1} + {timeouts} written"
    );
    // The opener: stages 1-3 (written before the open), open, close.
    let mine: Vec<&str> = lines
        .iter()
        .map(|(_, s)| s.as_str())
        .filter(|s| s.starts_with("198.18.0.2: "))
        .collect();
    assert_eq!(
        mine,
        [
            "198.18.0.2: ssh: Stage 1",
            "198.18.0.2: ssh: Stage 2",
            "198.18.0.2: ssh: Stage 3",
            "198.18.0.2: ssh: OPEN SESAME",
            "198.18.0.2: ssh: command timeout",
        ]
    );
}

/// Knocks at a human pace are logged as knockd logs them, line by line.
#[test]
fn stage_lines_below_the_rate_are_all_written() {
    let mut e = engine(COMMANDS, at(0, 0));
    drain(&mut e);
    let mut lines = Vec::new();
    for k in 0..50u64 {
        let src = IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 1, k as u8));
        let now = at(0, k * 1000);
        e.handle_event(now, &syn(src, 7000));
        lines.extend(log_lines(&drain(&mut e)));
    }
    let stages = lines
        .iter()
        .filter(|(_, l)| l.ends_with(": Stage 1"))
        .count();
    assert_eq!(stages, 50);
    assert!(lines.iter().all(|(_, l)| !l.contains("suppressed")));
}
