//! What the kernel tests of both sinks check the same way.

// Test support code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use knock_core::Step;
use knock_firewall::{FirewallSink, Grant};
use knock_testnet::{echoes, Pair, CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6};

/// How long a connect that must fail is given.
pub const WAIT: Duration = Duration::from_millis(700);

/// An address of the test network.
pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Over IPv4 and IPv6: a client granted tcp/2222 (an echo server there)
/// keeps its session when its address is blocked, cannot open a new one
/// while blocked, and can again once unblocked. Runs in the server
/// namespace (`pair.server.enter`), with `sink` made there.
pub fn block_keeps_established_sessions<S: FirewallSink>(pair: &Pair, sink: &mut S)
where
    S::Error: std::fmt::Debug,
{
    for (client, server) in [(CLIENT_V4, SERVER_V4), (CLIENT_V6, SERVER_V6)] {
        let g = Grant::new("ssh", ip(client), 1, vec![Step::tcp(2222)])
            .with_expiry(Some(SystemTime::now() + Duration::from_secs(60)));
        sink.open(&g).unwrap();
        let mut conn = pair
            .client
            .tcp_stream(ip(server), 2222, Duration::from_secs(2))
            .unwrap();
        assert!(echoes(&mut conn, b"before"), "no echo before the block");
        sink.block(ip(client), SystemTime::now() + Duration::from_secs(60))
            .unwrap();
        assert!(
            echoes(&mut conn, b"after"),
            "the block cut the session of {client}"
        );
        assert!(
            !pair.client.tcp_connect(ip(server), 2222, WAIT),
            "a new connection of blocked {client}"
        );
        sink.unblock(ip(client)).unwrap();
        assert!(pair.client.tcp_connect(ip(server), 2222, WAIT));
    }
}
