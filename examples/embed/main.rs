//! The smallest embedding of knock-core: a program that owns its sockets
//! (UDP on loopback), feeds the matcher and prints its decisions.
//!
//! ```text
//! cargo run --example embed &
//! for p in 7001 7002 7003; do echo | nc -u -w0 127.0.0.1 $p; done
//! ```
use knock_core::{Door, Event, Limits, Matcher, Step, Timestamp};
use std::{
    net::UdpSocket,
    sync::mpsc,
    time::{Duration, Instant},
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ports = [7001, 7002, 7003];
    let door = Door::new("demo", ports.iter().map(|&p| Step::udp(p)).collect())
        .with_grant_lifetime(Some(Duration::from_secs(5)));
    let mut matcher = Matcher::new(vec![door], Limits::default())?;
    let (tx, rx) = mpsc::channel();
    for port in ports {
        let (sock, tx) = (UdpSocket::bind(("127.0.0.1", port))?, tx.clone());
        std::thread::spawn(move || {
            while let Ok((_, from)) = sock.recv_from(&mut [0; 64]) {
                let _ = tx.send((from.ip(), sock.local_addr().map(|a| a.ip()), port));
            }
        });
    }
    let (start, now) = (Instant::now(), |s: Instant| {
        Timestamp::from_micros(s.elapsed().as_micros() as u64)
    });
    loop {
        let wait = matcher
            .poll_timeout()
            .map_or(Duration::from_secs(3600), |t| t - now(start));
        match rx.recv_timeout(wait) {
            Ok((src, Ok(dst), port)) => {
                matcher.handle_event(now(start), &Event::udp(src, dst, port, now(start)))
            }
            _ => matcher.handle_timeout(now(start)),
        }
        while let Some(decision) = matcher.poll_decision() {
            println!("{decision:?}");
        }
    }
}
