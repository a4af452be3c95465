//! End-to-end: the `knockd` example in a server namespace, real knocks from
//! Debian's `knock` client in a client namespace, real iptables / nftables
//! rules, and a TCP connect to port 22 that must (or must not) get through.
//! Root only; `.ci/run` runs them with `--include-ignored`.

// Test support code: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::time::{Duration, Instant};

use knock_testnet::{wait_for, SERVER_V4, SERVER_V6};

mod common;
use common::{example_bin, Server, Setup};

const CLASSIC: &str = "
[options]
    LogFile = {DIR}/ignored.log

[openSSH]
    sequence    = 7000,8000,9000
    seq_timeout = 5
    command     = /usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
    tcpflags    = syn

[closeSSH]
    sequence    = 9000,8000,7000
    seq_timeout = 5
    command     = /usr/sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
    tcpflags    = syn
";

#[test]
#[ignore = "needs root"]
fn open_door_and_reversed_close_door_with_iptables_commands() {
    let s = Server::start(CLASSIC);
    assert!(
        !s.connects(SERVER_V4),
        "tcp/22 must be closed before knocking"
    );
    s.knock(SERVER_V4, &["7000", "8000", "9000"]);
    s.wait_open(SERVER_V4);
    let rules = s.pair.server.run(&["iptables", "-S", "INPUT"]).unwrap();
    assert!(
        rules.contains("-A INPUT -s 198.18.0.2/32 -p tcp -m tcp --dport 22 -j ACCEPT"),
        "{rules}"
    );
    assert!(
        s.log().contains("198.18.0.2: openSSH: OPEN SESAME"),
        "{}",
        s.log()
    );
    s.knock(SERVER_V4, &["9000", "8000", "7000"]);
    wait_for("the close door", Duration::from_secs(5), || {
        !s.connects(SERVER_V4)
    });
    let rules = s.pair.server.run(&["iptables", "-S", "INPUT"]).unwrap();
    assert!(!rules.contains("198.18.0.2"), "{rules}");
}

#[test]
#[ignore = "needs root"]
fn wrong_order_and_too_slow_do_not_open() {
    let s = Server::start(CLASSIC);
    s.knock(SERVER_V4, &["7000", "9000", "8000"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!s.connects(SERVER_V4), "wrong order opened");
    // Too slow: the sequence must finish within seq_timeout = 5 s.
    s.knock(SERVER_V4, &["7000", "8000"]);
    std::thread::sleep(Duration::from_millis(5_500));
    s.knock(SERVER_V4, &["9000"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!s.connects(SERVER_V4), "slow knock opened");
    assert!(
        s.log().contains("sequence timeout (stage 2)"),
        "{}",
        s.log()
    );
}

#[test]
#[ignore = "needs root"]
fn start_and_stop_commands_with_cmd_timeout_and_mixed_protocols() {
    let s = Server::start(
        "
[options]
    Interface = kn0
[ssh]
    sequence      = 7000:tcp,8000:udp,9000:tcp
    start_command = /usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
    cmd_timeout   = 2
    stop_command  = /usr/sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
",
    );
    s.knock(SERVER_V4, &["7000", "8000:udp", "9000"]);
    s.wait_open(SERVER_V4);
    let opened = Instant::now();
    wait_for("the stop command", Duration::from_secs(6), || {
        !s.connects(SERVER_V4)
    });
    assert!(
        opened.elapsed() >= Duration::from_millis(1_000),
        "closed too early"
    );
    assert!(s.log().contains("ssh: command timeout"), "{}", s.log());
}

#[test]
#[ignore = "needs root"]
fn one_time_sequences_work_once_each_over_ipv4_and_ipv6() {
    let s = Setup::new(
        "
[once]
    one_time_sequences = {DIR}/once.seq
    start_command = /usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
    start_command_6 = /usr/sbin/ip6tables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
",
    )
    .file(
        "once.seq",
        " 1001,1002\n 2001:udp,2002\n 3001,3002\n",
        0o644,
    )
    .start();
    s.knock(SERVER_V4, &["1001", "1002"]);
    s.wait_open(SERVER_V4);
    wait_for("line 1 marked", Duration::from_secs(3), || {
        fs::read_to_string(s.path("once.seq"))
            .unwrap()
            .starts_with("#1001,1002\n")
    });
    // The used line no longer opens (from IPv6 either).
    s.knock(SERVER_V6, &["1001", "1002"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!s.connects(SERVER_V6), "a used sequence opened");
    // The next line works, over IPv6.
    s.knock(SERVER_V6, &["2001:udp", "2002"]);
    s.wait_open(SERVER_V6);
    let file = fs::read_to_string(s.path("once.seq")).unwrap();
    assert_eq!(file, "#1001,1002\n#2001:udp,2002\n 3001,3002\n");
}

#[test]
#[ignore = "needs root"]
fn native_nftables_door_opens_and_the_kernel_closes_it() {
    // nftables guards the door's ports itself: no iptables rule, so the
    // test sees the nftables decision alone (and a native nftables door is
    // refused where the host drops its port).
    let s = Setup::new(
        "
[ssh]
    sequence    = 7000,8000
    open        = tcp/22
    firewall    = nftables
    cmd_timeout = 2
",
    )
    .no_iptables_drop()
    .start();
    assert!(!s.connects(SERVER_V4), "guard must drop tcp/22");
    s.knock(SERVER_V4, &["7000", "8000"]);
    s.wait_open(SERVER_V4);
    let set = s
        .pair
        .server
        .run(&["nft", "list", "table", "inet", "knock"])
        .unwrap();
    assert!(set.contains("198.18.0.2"), "{set}");
    wait_for("the element to expire", Duration::from_secs(6), || {
        !s.connects(SERVER_V4)
    });
}

#[test]
#[ignore = "needs root"]
fn native_iptables_door() {
    let s = Server::start(
        "
[ssh]
    sequence    = 7000,8000
    open        = tcp/22
    firewall    = iptables
    cmd_timeout = 2
",
    );
    s.knock(SERVER_V4, &["7000", "8000"]);
    s.wait_open(SERVER_V4);
    wait_for("the grant to close", Duration::from_secs(6), || {
        !s.connects(SERVER_V4)
    });
}

#[test]
#[ignore = "needs root"]
fn sequence_file_of_reusable_sequences() {
    let s = Setup::new(
        "
[ssh]
    sequence = {DIR}/ssh.seq
    command  = /usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
",
    )
    .file("ssh.seq", " 1001,1002\n 2001,2002\n", 0o644)
    .start();
    s.knock(SERVER_V4, &["2001", "2002"]);
    s.wait_open(SERVER_V4);
    s.revoke_ssh(knock_testnet::CLIENT_V4);
    assert!(!s.connects(SERVER_V4));
    s.knock(SERVER_V4, &["1001", "1002"]);
    s.wait_open(SERVER_V4);
}

#[test]
#[ignore = "needs root"]
fn sighup_reloads_and_a_broken_config_keeps_the_old_one() {
    let mut s = Server::start(CLASSIC);
    // A broken config: logged, the old doors keep working.
    s.write_conf("[openSSH]\n sequence = 7000,\n");
    s.signal("-HUP");
    wait_for("reload failure logged", Duration::from_secs(3), || {
        s.log().contains("reload failed")
    });
    s.knock(SERVER_V4, &["7000", "8000", "9000"]);
    s.wait_open(SERVER_V4);
    s.knock(SERVER_V4, &["9000", "8000", "7000"]);
    wait_for("close", Duration::from_secs(5), || !s.connects(SERVER_V4));
    // A changed sequence: the new one opens, the old one no longer does.
    s.write_conf(&CLASSIC.replace("7000,8000,9000", "7100,8100,9100"));
    s.signal("-HUP");
    wait_for("reload logged", Duration::from_secs(3), || {
        s.log().contains("configuration reloaded")
    });
    s.knock(SERVER_V4, &["7000", "8000", "9000"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!s.connects(SERVER_V4), "the old sequence still opens");
    // (Its 9000 started an attempt at closeSSH: let that expire first, or
    // 7100 would only invalidate it, as in knockd.)
    std::thread::sleep(Duration::from_millis(5_200));
    s.knock(SERVER_V4, &["7100", "8100", "9100"]);
    s.wait_open(SERVER_V4);
    // SIGTERM stops it within a second.
    s.signal("-TERM");
    let mut child = s.child.take().unwrap();
    let t = Instant::now();
    wait_for("exit", Duration::from_secs(2), || {
        child.try_wait().unwrap().is_some()
    });
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[test]
#[ignore = "needs root"]
fn a_reload_naming_a_fifo_fails_at_once_and_the_old_doors_keep_working() {
    let s = Server::start(CLASSIC);
    let fifo = s.path("seq.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    s.write_conf("[openSSH]\n sequence = {DIR}/seq.fifo\n");
    s.signal("-HUP");
    wait_for("reload failure logged", Duration::from_secs(3), || {
        let log = s.log();
        log.contains("reload failed")
            && log.contains(&fifo.display().to_string())
            && log.contains("not a regular file (a FIFO)")
    });
    // The daemon did not block in the reload: the old doors still open.
    s.knock(SERVER_V4, &["7000", "8000", "9000"]);
    s.wait_open(SERVER_V4);
}

#[test]
#[ignore = "needs root"]
fn ack_knocks_on_a_syn_door_do_not_open() {
    use knock::capture::craft;
    use knock::core::TcpFlags;
    let s = Server::start(CLASSIC);
    let (client, server) = ("198.18.0.2".parse().unwrap(), "198.18.0.1".parse().unwrap());
    // Addressed to the server's MAC: frames for another MAC never count.
    let mac_text = s
        .pair
        .server
        .run(&["cat", "/sys/class/net/kn0/address"])
        .unwrap();
    let mac: Vec<u8> = mac_text
        .trim()
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    let frames: Vec<Vec<u8>> = [7000u16, 8000, 9000]
        .iter()
        .map(|&port| {
            let tcp = craft::tcp(40000, port, TcpFlags::ACK);
            let ip = craft::ipv4(client, server, 6, &[], craft::Frag::default(), &tcp);
            let mut f = craft::ethernet(&[], craft::ETH_IPV4, &ip);
            f[..6].copy_from_slice(&mac);
            f
        })
        .collect();
    s.pair
        .client
        .send_frames(knock_testnet::CLIENT_IF, &frames)
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(!s.connects(SERVER_V4), "ACK knocks opened a syn door");
    // The same ports as SYNs (Debian's knock) do open it.
    s.knock(SERVER_V4, &["7000", "8000", "9000"]);
    s.wait_open(SERVER_V4);
}

#[test]
#[ignore = "needs root"]
fn an_interface_that_goes_down_and_up_is_reopened() {
    let s = Server::start(CLASSIC);
    s.pair
        .server
        .run(&["ip", "link", "set", "kn0", "down"])
        .unwrap();
    std::thread::sleep(Duration::from_millis(1_500));
    s.pair
        .server
        .run(&["ip", "link", "set", "kn0", "up"])
        .unwrap();
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(s.child.as_ref().is_some(), "still running");
    s.knock(SERVER_V4, &["7000", "8000", "9000"]);
    s.wait_open(SERVER_V4);
}

#[test]
#[ignore = "needs root"]
fn a_pending_stop_command_survives_a_restart() {
    let mut s = Server::start(
        "
[ssh]
    sequence      = 7000,8000
    start_command = /usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
    cmd_timeout   = 4
    stop_command  = /usr/sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
",
    );
    s.knock(SERVER_V4, &["7000", "8000"]);
    s.wait_open(SERVER_V4);
    let opened = Instant::now();
    // Stop the daemon (SIGTERM), then start it again: the stop command due 4 s
    // after the open still runs (knockd forgets it and leaves the port open).
    s.signal("-TERM");
    let mut child = s.child.take().unwrap();
    wait_for("exit", Duration::from_secs(2), || {
        child.try_wait().unwrap().is_some()
    });
    assert!(s.connects(SERVER_V4), "still open while the daemon is down");
    s.spawn();
    wait_for(
        "the stop command after the restart",
        Duration::from_secs(8),
        || !s.connects(SERVER_V4),
    );
    assert!(
        opened.elapsed() >= Duration::from_secs(3),
        "closed too early"
    );
}

#[test]
#[ignore = "needs root"]
fn our_client_knocks_lines_of_a_one_time_sequence_file() {
    let s = Setup::new(
        "
[once]
    one_time_sequences = {DIR}/once.seq
    start_command = /usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
",
    )
    .file("once.seq", " 1001,1002:udp,1003\n 2001,2002\n", 0o644)
    .start();
    let client = example_bin("knock");
    let seq = s.path("once.seq");
    let knock = |line: &str| {
        s.pair
            .client
            .command(client.to_str().unwrap())
            .args([
                SERVER_V4,
                "--sequence-file",
                seq.to_str().unwrap(),
                "--line",
                line,
            ])
            .output()
            .unwrap()
    };
    let out = knock("1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.wait_open(SERVER_V4);
    wait_for("line 1 marked", Duration::from_secs(3), || {
        fs::read_to_string(&seq).unwrap().starts_with('#')
    });
    // The used line is refused by the client itself, with file and line.
    let out = knock("1");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("once.seq:1"), "{err}");
    // The next line is the active one and works.
    s.revoke_ssh(knock_testnet::CLIENT_V4);
    assert!(!s.connects(SERVER_V4));
    assert!(knock("2").status.success());
    s.wait_open(SERVER_V4);
}

#[test]
#[ignore = "needs root"]
fn an_iptables_grant_left_by_a_restart_still_closes_on_time() {
    let mut s = Server::start(
        "
[ssh]
    sequence    = 7000,8000
    open        = tcp/22
    firewall    = iptables
    cmd_timeout = 4
",
    );
    s.knock(SERVER_V4, &["7000", "8000"]);
    s.wait_open(SERVER_V4);
    let opened = Instant::now();
    s.signal("-TERM");
    let mut child = s.child.take().unwrap();
    wait_for("exit", Duration::from_secs(2), || {
        child.try_wait().unwrap().is_some()
    });
    // The new daemon finds the rule at start-up, keeps it (not expired yet),
    // and wakes up to remove it when its time is over: no periodic polling.
    s.spawn();
    assert!(s.connects(SERVER_V4), "the grant survives the restart");
    wait_for(
        "the rule to be reconciled away",
        Duration::from_secs(8),
        || !s.connects(SERVER_V4),
    );
    assert!(
        opened.elapsed() >= Duration::from_secs(3),
        "closed too early"
    );
    let rules = s.pair.server.run(&["iptables", "-S", "KNOCK"]).unwrap();
    assert!(!rules.contains("198.18.0.2"), "{rules}");
}

#[test]
#[ignore = "needs root"]
fn daemon_mode_writes_its_pid_file_and_listens_on_any_interface() {
    let pair = knock_testnet::Pair::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("knockd.conf");
    fs::write(
        &conf,
        CLASSIC.replace("{DIR}", &dir.path().display().to_string()),
    )
    .unwrap();
    pair.server
        .run(&[
            "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "DROP",
        ])
        .unwrap();
    pair.server.tcp_listen(22).unwrap();
    let pid_file = dir.path().join("knockd.pid");
    let bin = example_bin("knockd");
    // -d forks into the background: the command itself returns at once.
    let st = pair
        .server
        .command(bin.to_str().unwrap())
        .args(["-d", "-i", "any", "-c", conf.to_str().unwrap()])
        .args([
            "-p",
            pid_file.to_str().unwrap(),
            "--state-dir",
            dir.path().to_str().unwrap(),
        ])
        .args(["-g", dir.path().join("knockd.log").to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    // Read the pid file the moment it appears: a reader (systemd's
    // PIDFile=) must never see it empty or half written.
    let end = std::time::Instant::now() + Duration::from_secs(10);
    let pid = loop {
        match fs::read_to_string(&pid_file) {
            Ok(s) => break s,
            Err(_) if std::time::Instant::now() < end => {
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(e) => panic!("no pid file after 10 s: {e}"),
        }
    };
    assert!(
        pid.ends_with('\n') && pid.trim().parse::<u32>().is_ok(),
        "the pid file was read as {pid:?}"
    );
    let pid = pid.trim().to_owned();
    let log = || fs::read_to_string(dir.path().join("knockd.log")).unwrap_or_default();
    wait_for("start-up", Duration::from_secs(10), || {
        log().contains("starting up, listening on any")
    });
    std::thread::sleep(Duration::from_millis(300));
    pair.client
        .run(&["knock", "-d", "100", SERVER_V4, "7000", "8000", "9000"])
        .unwrap();
    wait_for("tcp/22 open", Duration::from_secs(5), || {
        pair.client
            .tcp_connect(SERVER_V4.parse().unwrap(), 22, Duration::from_millis(700))
    });
    knock_testnet::run(&["kill", "-TERM", &pid]).unwrap();
    wait_for("the pid file to go", Duration::from_secs(3), || {
        !pid_file.exists()
    });
}

#[test]
#[ignore = "needs root"]
fn a_pending_stop_command_survives_a_reload() {
    let s = Server::start(
        "
[ssh]
    sequence      = 7000,8000
    start_command = /usr/sbin/iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
    cmd_timeout   = 3
    stop_command  = /usr/sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
",
    );
    s.knock(SERVER_V4, &["7000", "8000"]);
    s.wait_open(SERVER_V4);
    let opened = Instant::now();
    // knockd loses pending stop commands on SIGHUP; ours keeps them.
    s.signal("-HUP");
    wait_for("reload", Duration::from_secs(3), || {
        s.log().contains("configuration reloaded")
    });
    wait_for(
        "the stop command after the reload",
        Duration::from_secs(6),
        || !s.connects(SERVER_V4),
    );
    assert!(
        opened.elapsed() >= Duration::from_secs(2),
        "closed too early"
    );
}
