//! Readiness: the `knockd` example speaks systemd's notify protocol
//! (`Type=notify`). The test binds its own datagram socket, points
//! `NOTIFY_SOCKET` at it and starts knockd in a namespace, as systemd would.
//! `READY=1` must mean "a knock now is seen": a thread in the client
//! namespace waits on the socket and knocks the moment `READY=1` arrives;
//! the door must open. Then SIGHUP gives `RELOADING=1` and `READY=1` again,
//! and SIGTERM `STOPPING=1`. Root only; `.ci/run` runs it with
//! `--include-ignored`.

// Test support code: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{touch_door, Server, Setup};
use knock_testnet::{wait_for, SERVER_IF, SERVER_V4};

/// The next notification (one datagram, `KEY=value` lines), or a panic
/// naming `what` after `timeout`.
fn next(sock: &UnixDatagram, what: &str, timeout: Duration) -> String {
    sock.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 4096];
    match sock.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => panic!("no notification while waiting for {what}: {e}"),
    }
}

/// Notifications until one has the line `line`; all of them, in order.
fn until(sock: &UnixDatagram, line: &str) -> Vec<String> {
    let end = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {line} in {seen:?}");
        let msg = next(sock, line, left);
        let done = msg.lines().any(|l| l == line);
        seen.push(msg);
        if done {
            return seen;
        }
    }
}

/// A server with knockd on `conf` with `setup`, `NOTIFY_SOCKET` pointing
/// at `notify.sock` in its temp dir, started without waiting for it; and the
/// socket, bound before knockd starts.
fn with_notify_socket<'a>(
    conf: &'a str,
    setup: impl FnOnce(Setup<'a>) -> Setup<'a>,
) -> (Server, UnixDatagram) {
    let mut s = setup(
        Setup::new(conf)
            .env("NOTIFY_SOCKET", "{DIR}/notify.sock")
            .quiet(),
    )
    .prepare();
    let sock = UnixDatagram::bind(s.path("notify.sock")).unwrap();
    s.spawn_unwaited();
    (s, sock)
}

/// One SYN to each port of the server, from the calling thread (which must
/// be in the client namespace): a non-blocking connect, then close.
fn knock(ports: &[u16]) {
    for &port in ports {
        let addr = SocketAddr::new(SERVER_V4.parse::<IpAddr>().unwrap(), port);
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&addr.into());
    }
}

#[test]
#[ignore = "needs root"]
fn ready_means_capture_is_open_then_reloading_and_stopping() {
    // kx9 does not exist: the daemon starts on kn0 and says kx9 is down.
    let door = touch_door("7000,8000");
    let (s, sock) = with_notify_socket(&door, |setup| setup.args(&["-i", "kx9"]));

    // In the client namespace: wait for READY=1 and knock at once.
    let before_ready = s
        .pair
        .client
        .enter(|| {
            let seen = until(&sock, "READY=1");
            knock(&[7000, 8000]);
            seen
        })
        .unwrap();
    s.wait_opened(
        &format!("the knock sent right after READY=1 to open the door\n{before_ready:?}"),
        Duration::from_secs(5),
    );
    let ready = before_ready.last().unwrap();
    let status = ready
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .unwrap_or_else(|| panic!("no STATUS with READY=1: {ready:?}"));
    for piece in ["cmd", SERVER_IF, "kx9"] {
        assert!(status.contains(piece), "STATUS lacks {piece}: {status:?}");
    }
    assert!(
        before_ready[..before_ready.len() - 1]
            .iter()
            .all(|m| !m.contains("READY=1")),
        "{before_ready:?}"
    );

    // Reload: RELOADING=1 (with the monotonic time systemd wants), then READY=1.
    s.write_conf(&format!(
        "{door}\n[other]\n sequence = 7100,8100\n start_command = true\n"
    ));
    s.signal("-HUP");
    let reload = until(&sock, "READY=1");
    let first = reload.first().unwrap();
    assert!(
        first.lines().any(|l| l == "RELOADING=1")
            && first.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reload:?}"
    );
    let status = reload.last().unwrap();
    assert!(
        status.contains("STATUS=") && status.contains("other"),
        "{status:?}"
    );
    wait_for("the reload to be logged", Duration::from_secs(5), || {
        s.log().contains("configuration reloaded")
    });

    // Stop: STOPPING=1.
    s.signal("-TERM");
    until(&sock, "STOPPING=1");
}

#[test]
#[ignore = "needs root"]
fn no_ready_when_capture_cannot_start() {
    // Not allowed to capture (no CAP_NET_RAW): the start fails, and no
    // READY=1 was ever sent.
    let (mut s, sock) = with_notify_socket(
        "[cmd]\n sequence = 7000,8000\n start_command = true\n",
        |setup| setup.wrap(&["setpriv", "--inh-caps=-net_raw", "--bounding-set=-net_raw"]),
    );
    let status = s.wait_exit(
        "knockd without CAP_NET_RAW to exit",
        Duration::from_secs(20),
    );
    assert!(!status.success());
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    while let Ok(n) = sock.recv(&mut buf) {
        let msg = String::from_utf8_lossy(&buf[..n]);
        assert!(!msg.contains("READY=1"), "{msg:?}");
    }
}
