//! Scenario tests: every rule of the matcher, and each knockd bug with the
//! opposite outcome. `reference.rs` holds the proptest model.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::*;

mod reference;

const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
const ME: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 3));
const ME6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2));

/// A matcher with a fake clock, in the spirit of quinn-proto's `Pair`.
struct Harness {
    m: Matcher,
    now: Timestamp,
}

impl Harness {
    fn new(doors: Vec<Door>) -> Self {
        Self::with_limits(doors, Limits::default())
    }

    fn with_limits(doors: Vec<Door>, limits: Limits) -> Self {
        Harness {
            m: Matcher::new(doors, limits).unwrap(),
            now: Timestamp::from_secs(1_000),
        }
    }

    fn at(&mut self, ms: u64) -> &mut Self {
        self.now = Timestamp::from_secs(1_000) + Duration::from_millis(ms);
        self
    }

    fn syn(&mut self, src: IpAddr, port: u16) -> Vec<Decision> {
        self.tcp(src, port, TcpFlags::SYN)
    }

    fn tcp(&mut self, src: IpAddr, port: u16, flags: TcpFlags) -> Vec<Decision> {
        let dst = if src.is_ipv4() {
            SERVER
        } else {
            "2001:db8::1".parse().unwrap()
        };
        let ev = Event::tcp(src, dst, port, flags, self.now);
        self.m.handle_event(self.now, &ev);
        self.drain()
    }

    fn udp(&mut self, src: IpAddr, port: u16) -> Vec<Decision> {
        let ev = Event::udp(src, SERVER, port, self.now);
        self.m.handle_event(self.now, &ev);
        self.drain()
    }

    fn timeout(&mut self) -> Vec<Decision> {
        self.m.handle_timeout(self.now);
        self.drain()
    }

    fn drain(&mut self) -> Vec<Decision> {
        std::iter::from_fn(|| self.m.poll_decision()).collect()
    }

    fn id(&self, name: &str) -> DoorId {
        self.m.door_id(name).unwrap()
    }
}

fn opens(ds: &[Decision]) -> Vec<(DoorId, IpAddr)> {
    ds.iter()
        .filter_map(|d| match *d {
            Decision::Open { door, src, .. } => Some((door, src)),
            _ => None,
        })
        .collect()
}

fn door(name: &str, ports: &[u16]) -> Door {
    Door::new(name, ports.iter().map(|&p| Step::tcp(p)).collect())
}

#[test]
fn correct_sequence_stages_then_opens() {
    let mut h = Harness::new(vec![door("ssh", &[7000, 8000, 9000])]);
    let ssh = h.id("ssh");
    assert_eq!(
        h.syn(ME, 7000),
        vec![Decision::Stage {
            door: ssh,
            src: ME,
            step: 1
        }]
    );
    assert_eq!(
        h.syn(ME, 8000),
        vec![Decision::Stage {
            door: ssh,
            src: ME,
            step: 2
        }]
    );
    let last = h.syn(ME, 9000);
    assert_eq!(
        last[0],
        Decision::Stage {
            door: ssh,
            src: ME,
            step: 3
        }
    );
    assert!(matches!(last[1], Decision::Open { door, src: ME, until: None, .. } if door == ssh));
    assert_eq!(h.m.stats().sources, 0, "a finished attempt is forgotten");
}

#[test]
fn mixed_protocols_must_match_exactly() {
    let d = Door::new(
        "mix",
        vec![Step::tcp(7000), Step::udp(8000), Step::tcp(9000)],
    );
    let mut h = Harness::new(vec![d]);
    h.syn(ME, 7000);
    let ds = h.syn(ME, 8000); // tcp where udp is expected: no such knock port -> ignored
    assert!(ds.is_empty(), "{ds:?}");
    h.udp(ME, 8000);
    assert_eq!(opens(&h.syn(ME, 9000)).len(), 1);
}

#[test]
fn wrong_port_invalidates_and_does_not_start_a_new_attempt() {
    let mut h = Harness::new(vec![door("ssh", &[7000, 8000, 9000])]);
    let ssh = h.id("ssh");
    h.syn(ME, 7000);
    let ds = h.syn(ME, 7000 + 2000); // 9000: a knock port, but not the next step
    assert_eq!(
        ds,
        vec![Decision::Invalidated {
            door: ssh,
            src: ME,
            step: 1
        }]
    );
    assert_eq!(h.m.stats().sources, 0);
    // The invalidating knock did not start anything, so 8000 now is ignored...
    assert!(h.syn(ME, 8000).is_empty());
    // ...and a fresh first knock starts over.
    h.syn(ME, 7000);
    h.syn(ME, 8000);
    assert_eq!(opens(&h.syn(ME, 9000)), vec![(ssh, ME)]);
}

#[test]
fn ports_no_door_uses_never_disturb_an_attempt() {
    let mut h = Harness::new(vec![door("ssh", &[7000, 8000])]);
    h.syn(ME, 7000);
    for p in [22, 80, 443, 7999, 8001] {
        assert!(h.syn(ME, p).is_empty());
        assert!(h.udp(ME, p).is_empty());
    }
    assert_eq!(opens(&h.syn(ME, 8000)).len(), 1);
    assert_eq!(h.m.stats().ignored, 10);
}

#[test]
fn seq_timeout_expires_by_timer_not_by_next_packet() {
    let d = door("ssh", &[7000, 8000]).with_seq_timeout(Duration::from_secs(5));
    let mut h = Harness::new(vec![d]);
    let ssh = h.id("ssh");
    h.at(0).syn(ME, 7000);
    assert_eq!(h.m.poll_timeout(), Some(h.now + Duration::from_secs(5)));
    assert!(h.at(4_999).timeout().is_empty());
    // knockd would log this only when the next packet arrives; we do at the deadline.
    assert_eq!(
        h.at(5_000).timeout(),
        vec![Decision::Expired {
            door: ssh,
            src: ME,
            step: 1
        }]
    );
    assert_eq!(h.m.poll_timeout(), None);
    // The late knock is a fresh first knock (not a second step).
    assert_eq!(h.at(5_001).syn(ME, 8000), vec![]);
    assert_eq!(
        h.syn(ME, 7000),
        vec![Decision::Stage {
            door: ssh,
            src: ME,
            step: 1
        }]
    );
}

#[test]
fn a_late_step_expires_lazily_even_without_handle_timeout_and_restarts() {
    let d = door("ssh", &[7000, 8000]).with_seq_timeout(Duration::from_secs(5));
    let mut h = Harness::new(vec![d]);
    let ssh = h.id("ssh");
    h.at(0).syn(ME, 7000);
    let ds = h.at(6_000).syn(ME, 7000);
    assert_eq!(
        ds,
        vec![
            Decision::Expired {
                door: ssh,
                src: ME,
                step: 1
            },
            Decision::Stage {
                door: ssh,
                src: ME,
                step: 1
            }
        ]
    );
}

#[test]
fn knockd_bug_expiry_drops_only_its_own_attempt() {
    // knockd: removing an expired attempt dropped every other attempt.
    let d = door("ssh", &[7000, 8000, 9000]).with_seq_timeout(Duration::from_secs(5));
    let mut h = Harness::new(vec![d]);
    h.at(0).syn(OTHER, 7000); // a scanner
    h.at(3_000).syn(ME, 7000);
    h.at(4_000).syn(ME, 8000);
    let ds = h.at(5_500).timeout(); // the scanner's attempt expires
    assert_eq!(ds.len(), 1);
    assert_eq!(ds[0].src(), Some(OTHER));
    assert_eq!(opens(&h.at(6_000).syn(ME, 9000)).len(), 1);
}

#[test]
fn knockd_bug_doors_sharing_a_prefix_both_fire() {
    // knockd: with A=1,2 and B=1,2,3, B never opens.
    let mut h = Harness::new(vec![
        door("A", &[1001, 1002]),
        door("B", &[1001, 1002, 1003]),
    ]);
    let (a, b) = (h.id("A"), h.id("B"));
    // Twice: the second time the source's record is parked on a finished
    // attempt, and its first knock must still begin both doors.
    for _ in 0..2 {
        h.syn(ME, 1001);
        assert_eq!(opens(&h.syn(ME, 1002)), vec![(a, ME)]);
        assert_eq!(opens(&h.syn(ME, 1003)), vec![(b, ME)]);
    }
}

/// A source that opened a door and knocks it again starts a new attempt
/// (with a new start time for its seq_timeout), as does one that knocks
/// another door's first step.
#[test]
fn knocking_again_after_an_open_starts_afresh() {
    let ssh = door("ssh", &[7000, 8000]).with_seq_timeout(Duration::from_secs(5));
    let web = door("web", &[9000, 8000]).with_seq_timeout(Duration::from_secs(5));
    let mut h = Harness::new(vec![ssh, web]);
    let (ssh, web) = (h.id("ssh"), h.id("web"));
    h.at(0).syn(ME, 7000);
    assert_eq!(opens(&h.at(1).syn(ME, 8000)), vec![(ssh, ME)]);
    let again = h.at(4_000).syn(ME, 7000);
    assert_eq!(
        again,
        vec![Decision::Stage {
            door: ssh,
            src: ME,
            step: 1
        }]
    );
    assert_eq!(h.m.stats().attempts_started, 2);
    assert_eq!(h.m.stats().sources, 1);
    // 8 s after the first start, 4 s after the new one: not expired (5 s).
    assert_eq!(opens(&h.at(8_000).syn(ME, 8000)), vec![(ssh, ME)]);
    h.at(9_000).syn(ME, 9000);
    assert_eq!(opens(&h.at(9_001).syn(ME, 8000)), vec![(web, ME)]);
    assert_eq!(h.m.stats().sources, 0);
}

#[test]
fn knockd_bug_duplicate_syn_tolerated_with_allow_repeat() {
    let plain = door("plain", &[7000, 8000]);
    let mut h = Harness::new(vec![plain.clone()]);
    h.syn(ME, 7000);
    let ds = h.syn(ME, 7000);
    assert!(
        matches!(ds[0], Decision::Invalidated { step: 1, .. }),
        "knockd's default: {ds:?}"
    );

    let mut h = Harness::new(vec![plain.with_allow_repeat(true)]);
    h.syn(ME, 7000);
    assert!(h.syn(ME, 7000).is_empty(), "retransmitted SYN ignored");
    h.syn(ME, 8000);
    assert!(h.syn(ME, 8000).is_empty() || h.m.stats().opens == 1);
    assert_eq!(h.m.stats().opens, 1);
}

#[test]
fn wrong_tcp_flags_neither_advance_nor_reset() {
    let syn_only = FlagFilter {
        set: TcpFlags::SYN,
        clear: TcpFlags::ACK,
    };
    let d = door("ssh", &[7000, 8000]).with_tcp_flags(syn_only);
    let mut h = Harness::new(vec![d]);
    assert!(
        h.tcp(ME, 7000, TcpFlags::ACK).is_empty(),
        "ACK knock on a syn door"
    );
    assert_eq!(h.m.stats().sources, 0);
    h.syn(ME, 7000);
    assert!(h.tcp(ME, 7000, TcpFlags::SYN | TcpFlags::ACK).is_empty());
    assert!(h.tcp(ME, 9999, TcpFlags::SYN | TcpFlags::ACK).is_empty());
    assert_eq!(opens(&h.syn(ME, 8000)).len(), 1);
}

#[test]
fn grant_closes_once_after_its_lifetime_and_reknock_extends() {
    let d = door("ssh", &[7000]).with_grant_lifetime(Some(Duration::from_secs(10)));
    let mut h = Harness::new(vec![d]);
    let ssh = h.id("ssh");
    let ds = h.at(0).syn(ME, 7000);
    let Decision::Open { grant, until, .. } = ds[1] else {
        panic!("{ds:?}")
    };
    assert_eq!(until, Some(h.now + Duration::from_secs(10)));
    // Knocking again while open extends the same grant: no duplicate rule.
    let ds = h.at(4_000).syn(ME, 7000);
    assert_eq!(
        ds[1],
        Decision::Extended {
            door: ssh,
            src: ME,
            grant,
            until: h.now + Duration::from_secs(10)
        }
    );
    assert!(
        h.at(10_000).timeout().is_empty(),
        "the old deadline no longer closes"
    );
    assert_eq!(
        h.at(14_000).timeout(),
        vec![Decision::Close {
            door: ssh,
            src: ME,
            grant
        }]
    );
    assert!(h.at(30_000).timeout().is_empty());
    assert_eq!(h.m.poll_timeout(), None);
    // After the close, a knock opens a new grant.
    let ds = h.syn(ME, 7000);
    assert!(matches!(ds[1], Decision::Open { grant: g, .. } if g != grant));
}

#[test]
fn doors_without_lifetime_open_every_time_and_never_close() {
    let mut h = Harness::new(vec![door("ssh", &[7000])]);
    assert_eq!(opens(&h.syn(ME, 7000)).len(), 1);
    assert_eq!(opens(&h.syn(ME, 7000)).len(), 1);
    assert_eq!(h.m.poll_timeout(), None);
    assert_eq!(h.m.stats().grants, 0);
}

#[test]
fn ipv4_and_ipv6_of_one_host_are_different_knockers() {
    let mut h = Harness::new(vec![door("ssh", &[7000, 8000])]);
    h.syn(ME, 7000);
    assert!(h.syn(ME6, 8000).is_empty(), "v6 has no attempt");
    h.syn(ME6, 7000);
    assert_eq!(opens(&h.syn(ME6, 8000)), vec![(h.id("ssh"), ME6)]);
    assert_eq!(opens(&h.syn(ME, 8000)), vec![(h.id("ssh"), ME)]);
}

#[test]
fn one_time_sequences_are_used_once_each() {
    let d = Door::one_time(
        "once",
        vec![
            vec![Step::tcp(1001), Step::tcp(1002)],
            vec![Step::udp(2001), Step::tcp(2002)],
        ],
    );
    let mut h = Harness::new(vec![d]);
    let id = h.id("once");
    let gen0 = h.m.listen_generation();
    h.syn(OTHER, 1001); // someone else is half-way through the first sequence
    h.syn(ME, 1001);
    let ds = h.syn(ME, 1002);
    assert_eq!(opens(&ds), vec![(id, ME)]);
    assert_eq!(
        ds.last(),
        Some(&Decision::SequenceConsumed {
            door: id,
            index: 0,
            remaining: 1
        })
    );
    assert!(h.m.listen_generation() > gen0);
    let ports: Vec<u16> = h.m.listen_set().iter().map(|l| l.port).collect();
    assert_eq!(ports, vec![2002, 2001]); // sorted by (proto, port): tcp before udp
                                         // The used sequence no longer opens, for anyone.
    assert!(h.syn(OTHER, 1002).is_empty());
    h.syn(ME, 1001);
    assert!(opens(&h.syn(ME, 1002)).is_empty());
    // The second works, once.
    h.udp(ME, 2001);
    let ds = h.syn(ME, 2002);
    assert_eq!(
        ds.last(),
        Some(&Decision::SequenceConsumed {
            door: id,
            index: 1,
            remaining: 0
        })
    );
    assert!(h.m.listen_set().is_empty(), "door disabled");
    assert!(h.udp(ME, 2001).is_empty());
}

#[test]
fn cooldown_ignores_the_door_after_an_open() {
    let d = door("ssh", &[7000, 8000]).with_cooldown(Duration::from_secs(60));
    let mut h = Harness::new(vec![d]);
    h.at(0).syn(ME, 7000);
    assert_eq!(opens(&h.syn(ME, 8000)).len(), 1);
    assert!(h.at(1_000).syn(ME, 7000).is_empty());
    assert!(h.syn(ME, 8000).is_empty());
    h.syn(OTHER, 7000);
    assert_eq!(opens(&h.syn(OTHER, 8000)).len(), 1, "others unaffected");
    h.at(60_000).timeout();
    h.syn(ME, 7000);
    assert_eq!(opens(&h.syn(ME, 8000)).len(), 1);
}

#[test]
fn target_and_source_restrictions() {
    let other_server: IpAddr = Ipv4Addr::new(198, 18, 0, 99).into();
    let d = door("t", &[7000]).with_target(Some(other_server));
    let mut h = Harness::new(vec![d]);
    assert!(
        h.syn(ME, 7000).is_empty(),
        "sent to the host, not the target"
    );
    let ev = Event::tcp(ME, other_server, 7000, TcpFlags::SYN, h.now);
    h.m.handle_event(h.now, &ev);
    assert_eq!(opens(&h.drain()).len(), 1);

    let d = door("f", &[7000]).with_from(vec!["198.18.0.2/32".parse().unwrap()]);
    let mut h = Harness::new(vec![d]);
    assert!(h.syn(OTHER, 7000).is_empty());
    assert_eq!(opens(&h.syn(ME, 7000)).len(), 1);
}

#[test]
fn full_table_evicts_spoofed_first_knocks_before_real_progress() {
    let limits = Limits::default().with_max_sources(100);
    let mut h = Harness::with_limits(vec![door("ssh", &[7000, 8000, 9000])], limits);
    h.syn(ME, 7000);
    h.syn(ME, 8000); // step 2: worth more than any spoofed first knock
    for i in 0..10_000u32 {
        let spoofed = IpAddr::V4(Ipv4Addr::from(0x6440_0000 + i)); // 100.64.0.0/10
        h.syn(spoofed, 7000);
        assert!(h.m.stats().sources <= 100);
    }
    let st = h.m.stats();
    assert_eq!(st.sources, 100);
    assert_eq!(st.evicted, 10_000 - 99);
    assert_eq!(opens(&h.syn(ME, 9000)).len(), 1);
    // Among equals the oldest goes first: the last 99 spoofers are still tracked.
    let newest = IpAddr::V4(Ipv4Addr::from(0x6440_0000 + 9_999));
    assert_eq!(h.syn(newest, 8000).len(), 1);
}

/// Doors with different timeouts: a record that takes over a slot (an
/// eviction, or an idle source knocking again) gets a timer entry early
/// enough for its own, shorter deadline.
#[test]
fn reused_records_expire_on_time_with_mixed_timeouts() {
    let long = door("long", &[7000, 8000]).with_seq_timeout(Duration::from_secs(60));
    let short = door("short", &[1000, 2000]).with_seq_timeout(Duration::from_secs(1));
    let limits = Limits::default().with_max_sources(1);
    let mut h = Harness::with_limits(vec![long, short], limits);
    let short_id = h.id("short");
    // ME's record (due in 60 s) is evicted by OTHER, whose attempt is due in 1 s.
    h.at(0).syn(ME, 7000);
    h.at(10).syn(OTHER, 1000);
    assert_eq!(h.m.stats().evicted, 1);
    assert!(h.m.poll_timeout() <= Some(h.at(1_010).now));
    let expired = h.at(1_010).timeout();
    assert_eq!(
        expired,
        vec![Decision::Expired {
            door: short_id,
            src: OTHER,
            step: 1
        }]
    );
    // An idle record (OTHER opens "long"), restarted at "short": also on time.
    h.at(2_000).syn(OTHER, 7000);
    assert_eq!(opens(&h.at(2_001).syn(OTHER, 8000)).len(), 1);
    assert_eq!(h.m.stats().sources, 0, "a finished attempt is forgotten");
    h.at(2_002).syn(OTHER, 1000);
    assert!(h.at(3_001).timeout().is_empty());
    assert_eq!(
        h.at(3_002).timeout().len(),
        1,
        "expired at 1 s, not at 60 s"
    );
}

/// Sources that knock again and again leave no garbage behind: the timer
/// queue holds at most one entry per record, and a record whose source went
/// quiet is freed by its timer.
#[test]
fn repeat_knockers_leave_no_garbage() {
    let ssh = door("ssh", &[7000, 8000, 9000]).with_seq_timeout(Duration::from_secs(5));
    let mut h = Harness::new(vec![ssh]);
    let mut t = 0;
    let mut knock = |h: &mut Harness, src: IpAddr| {
        for port in [7000, 8000, 9000] {
            t += 1;
            h.at(t).syn(src, port);
        }
    };
    for _ in 0..100 {
        knock(&mut h, ME);
        knock(&mut h, OTHER);
    }
    let bytes = h.m.source_state_bytes();
    for _ in 0..10_000 {
        knock(&mut h, ME);
        knock(&mut h, OTHER);
    }
    assert_eq!(h.m.source_state_bytes(), bytes, "no growth under churn");
    assert_eq!(h.m.stats().sources, 0);
    // Quiet sources: their idle records go when their timers fire.
    let wake = h.m.poll_timeout().expect("idle records have timers");
    h.now = wake + Duration::from_secs(5);
    assert!(h.timeout().is_empty(), "idle records expire silently");
    assert_eq!(h.m.poll_timeout(), None, "nothing left to wake for");
}

/// A source that has opened a door leaves an idle record; a flood that
/// fills the table may take it (it holds no attempt, so that is not counted
/// as an eviction) and the source still opens again.
#[test]
fn idle_records_give_way_to_a_flood_uncounted() {
    let limits = Limits::default().with_max_sources(100);
    let mut h = Harness::with_limits(vec![door("ssh", &[7000, 8000, 9000])], limits);
    let ssh = h.id("ssh");
    for port in [7000, 8000, 9000] {
        h.syn(ME, port);
    }
    for i in 0..10_000u32 {
        let spoofed = IpAddr::V4(Ipv4Addr::from(0x6440_0000 + i)); // 100.64.0.0/10
        h.syn(spoofed, 7000);
    }
    let st = h.m.stats();
    assert_eq!(st.sources, 100);
    assert_eq!(st.evicted, 10_000 - 100, "the idle record went uncounted");
    for port in [7000, 8000] {
        h.syn(ME, port);
    }
    assert_eq!(opens(&h.syn(ME, 9000)), vec![(ssh, ME)]);
}

#[test]
fn reload_keeps_unchanged_doors_attempts_and_all_grants() {
    let keep = door("keep", &[7000, 8000]);
    let change = door("change", &[1000, 2000]).with_grant_lifetime(Some(Duration::from_secs(30)));
    let mut h = Harness::new(vec![keep.clone(), change.clone()]);
    let (keep_id, change_id) = (h.id("keep"), h.id("change"));
    h.at(0).syn(ME, 1000);
    let ds = h.syn(ME, 2000);
    let Decision::Open { grant, .. } = ds[1] else {
        panic!()
    };
    h.syn(ME, 7000);
    h.syn(OTHER, 1000);

    let changed = door("change", &[1000, 3000]);
    h.m.replace_doors(vec![keep, changed]).unwrap();
    assert_eq!(h.id("keep"), keep_id);
    assert_ne!(h.id("change"), change_id);
    assert_eq!(
        h.m.door(change_id).unwrap().name,
        "change",
        "retired door still named"
    );
    // In-flight attempt of the unchanged door survives.
    assert_eq!(opens(&h.at(1_000).syn(ME, 8000)), vec![(keep_id, ME)]);
    // The changed door's attempt is gone: 3000 is now a first... no, not a first step.
    assert!(h.syn(OTHER, 3000).is_empty());
    // The grant of the old door still closes on time.
    assert_eq!(
        h.at(30_000).timeout(),
        vec![Decision::Close {
            door: change_id,
            src: ME,
            grant
        }]
    );
}

#[test]
fn bad_reload_changes_nothing() {
    let mut h = Harness::new(vec![door("ssh", &[7000, 8000])]);
    h.syn(ME, 7000);
    let err =
        h.m.replace_doors(vec![door("x", &[1]), door("x", &[2])])
            .unwrap_err();
    assert_eq!(err, DoorError::DuplicateName { door: "x".into() });
    assert_eq!(opens(&h.syn(ME, 8000)).len(), 1);
}

#[test]
fn time_going_backwards_is_clamped() {
    let d = door("ssh", &[7000, 8000]).with_seq_timeout(Duration::from_secs(5));
    let mut h = Harness::new(vec![d]);
    h.at(10_000).syn(ME, 7000);
    h.at(0).syn(ME, 8000); // clock jumped back: treated as 10_000
    assert_eq!(h.m.stats().opens, 1);
    assert!(h.at(1_000).timeout().is_empty());
}

#[test]
fn timers_fire_in_bounded_batches() {
    let limits = Limits::default().with_max_timers_per_call(10);
    let d = door("ssh", &[7000, 8000]).with_seq_timeout(Duration::from_secs(1));
    let mut h = Harness::with_limits(vec![d], limits);
    for i in 0..25u32 {
        h.at(0)
            .syn(IpAddr::V4(Ipv4Addr::from(0x6440_0000 + i)), 7000);
    }
    assert_eq!(h.at(2_000).timeout().len(), 10);
    assert!(h.m.poll_timeout().unwrap() <= h.now, "more is due at once");
    assert_eq!(h.timeout().len(), 10);
    assert_eq!(h.timeout().len(), 5);
    assert_eq!(h.m.poll_timeout(), None);
}

#[test]
fn many_doors_on_one_first_step_spill_and_all_open() {
    let doors: Vec<Door> = (0..5)
        .map(|i| door(&format!("d{i}"), &[5000, 6000 + i]))
        .collect();
    let mut h = Harness::new(doors);
    assert_eq!(h.syn(ME, 5000).len(), 5);
    let ds = h.syn(ME, 6003);
    assert_eq!(opens(&ds), vec![(h.id("d3"), ME)]);
    assert_eq!(
        ds.iter()
            .filter(|d| matches!(d, Decision::Invalidated { .. }))
            .count(),
        4
    );
}

#[test]
fn listen_set_reflects_flags_and_target() {
    let syn = FlagFilter {
        set: TcpFlags::SYN,
        clear: TcpFlags::EMPTY,
    };
    let d = Door::new("d", vec![Step::tcp(7000), Step::udp(8000)])
        .with_tcp_flags(syn)
        .with_target(Some(SERVER));
    let m = Matcher::new(vec![d], Limits::default()).unwrap();
    let ls = m.listen_set();
    assert_eq!(ls.len(), 2);
    assert_eq!(ls[0], Listen::new(Step::tcp(7000), syn, Some(SERVER)));
    assert_eq!(ls[1].flags_set, TcpFlags::EMPTY, "udp has no flags");
    assert!(ls[0].matches(&Event::tcp(
        ME,
        SERVER,
        7000,
        TcpFlags::SYN,
        Timestamp::ZERO
    )));
    assert!(!ls[0].matches(&Event::tcp(ME, OTHER, 7000, TcpFlags::SYN, Timestamp::ZERO)));
}

#[test]
fn restored_grants_keep_their_ids_and_close_on_time() {
    let d = door("ssh", &[7000]).with_grant_lifetime(Some(Duration::from_secs(10)));
    let mut h = Harness::new(vec![d]);
    let id = h.id("ssh");
    let until = h.now + Duration::from_secs(3);
    let g = h.m.restore_grant(id, ME, until, 41).unwrap();
    assert_eq!(g.get(), 41);
    assert_eq!(h.m.next_grant_id(), 42, "ids go on above a restored one");
    // The same source and door, or the same id, are refused.
    assert_eq!(h.m.restore_grant(id, ME, until, 7), None);
    assert_eq!(h.m.restore_grant(id, OTHER, until, 41), None);
    assert_eq!(h.m.restore_grant(DoorId(9), OTHER, until, 8), None);
    assert_eq!(
        h.m.open_grants().collect::<Vec<_>>(),
        vec![(id, ME, g, until)]
    );
    // A lower id than the counter keeps the counter.
    assert_eq!(
        h.m.restore_grant(id, OTHER, until, 3).map(GrantId::get),
        Some(3)
    );
    assert_eq!(h.m.next_grant_id(), 42);
    h.m.reserve_grant_ids(100);
    h.m.reserve_grant_ids(50);
    assert_eq!(h.m.next_grant_id(), 100, "never lowered");
    h.now = until;
    let ds = h.timeout();
    assert_eq!(
        ds,
        vec![
            Decision::Close {
                door: id,
                src: ME,
                grant: g
            },
            Decision::Close {
                door: id,
                src: OTHER,
                grant: GrantId(3)
            }
        ],
        "closes due together come by source address"
    );
    // A new grant gets the next id.
    let ds = h.syn(ME, 7000);
    assert!(matches!(ds[1], Decision::Open { grant, .. } if grant.get() == 100));
    // The id of a closed grant may be restored again.
    assert!(h
        .m
        .restore_grant(id, OTHER, h.now + Duration::from_secs(1), 3)
        .is_some());
}

#[test]
fn limits_clamp_and_read_back() {
    let l = Limits::default()
        .with_max_sources(0)
        .with_max_grants(0)
        .with_max_timers_per_call(0)
        .with_max_suspects(0);
    assert_eq!(
        (
            l.max_sources(),
            l.max_grants(),
            l.max_timers_per_call(),
            l.max_suspects()
        ),
        (1, 1, 1, 1)
    );
    assert_eq!(Limits::default().max_timers_per_call(), 4096);
    // One timer per call still gets everything done.
    let d = door("ssh", &[7000, 8000]).with_seq_timeout(Duration::from_secs(1));
    let mut h = Harness::with_limits(vec![d], l.with_max_sources(10));
    h.at(0).syn(ME, 7000);
    h.at(0).syn(OTHER, 7000);
    assert_eq!(h.at(1_000).timeout().len(), 1);
    assert_eq!(h.timeout().len(), 1);
}

#[test]
fn timers_due_in_one_call_fire_in_deadline_order() {
    let short = door("short", &[7000, 8000]).with_seq_timeout(Duration::from_secs(2));
    let long = door("long", &[1000, 2000]).with_seq_timeout(Duration::from_secs(5));
    let grant = door("g", &[3000]).with_grant_lifetime(Some(Duration::from_secs(3)));
    let mut h = Harness::new(vec![short, long, grant]);
    let (short, long, g) = (h.id("short"), h.id("long"), h.id("g"));
    let (third, fourth) = (
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, 4)),
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, 5)),
    );
    h.at(0).syn(OTHER, 1000); // expires at 5 s
    h.at(0).syn(ME, 1000); // expires at 5 s, before OTHER (address order)
    h.at(1_000).syn(fourth, 3000); // closes at 4 s
    h.at(2_000).syn(third, 7000); // expires at 4 s, before the close
    let ds = h.at(10_000).timeout();
    let grant = GrantId(1);
    assert_eq!(
        ds,
        vec![
            Decision::Expired {
                door: short,
                src: third,
                step: 1
            },
            Decision::Close {
                door: g,
                src: fourth,
                grant
            },
            Decision::Expired {
                door: long,
                src: ME,
                step: 1
            },
            Decision::Expired {
                door: long,
                src: OTHER,
                step: 1
            },
        ]
    );
}

#[test]
fn seeds_change_nothing_but_the_hashes() {
    let run = |seed: u64| {
        let mut m =
            Matcher::with_seed(
                vec![door("ssh", &[7000, 8000, 9000])
                    .with_grant_lifetime(Some(Duration::from_secs(1)))],
                Limits::default().with_max_sources(50),
                seed,
            )
            .unwrap();
        let mut out = Vec::new();
        for i in 0..2_000u32 {
            let src = IpAddr::V4(Ipv4Addr::from(0x6440_0000 + i / 3 % 97));
            let now = Timestamp::from_millis(u64::from(i) * 3);
            let port = [7000, 8000, 9000][(i % 3) as usize];
            let ev = Event::tcp(src, SERVER, port, TcpFlags::SYN, now);
            m.handle_event(now, &ev);
            out.extend(std::iter::from_fn(|| m.poll_decision()));
        }
        out
    };
    let a = run(0);
    assert!(a.iter().any(|d| matches!(d, Decision::Open { .. })));
    assert_eq!(a, run(0xdead_beef));
}

// ---- beyond knockd: strict doors, blacklist, time windows -------------

/// A port-ordered sweep of every port, well within seq_timeout.
fn sweep(h: &mut Harness, src: IpAddr) -> Vec<Decision> {
    let mut out = Vec::new();
    for port in 1..=65535u16 {
        out.extend(h.syn(src, port));
    }
    out
}

#[test]
fn knockd_bug_a_port_ordered_sweep_opens_an_ascending_door_unless_strict() {
    // knockd's behaviour (and ours without `strict`): the sweep opens.
    let mut h = Harness::new(vec![door("asc", &[7000, 8000, 9000])]);
    assert_eq!(opens(&sweep(&mut h, OTHER)).len(), 1);

    let mut h = Harness::new(vec![door("asc", &[7000, 8000, 9000]).with_strict(true)]);
    let ds = sweep(&mut h, OTHER);
    assert!(opens(&ds).is_empty(), "a sweep opened a strict door");
    assert!(ds
        .iter()
        .any(|d| matches!(d, Decision::Invalidated { step: 1, .. })));
    assert!(h.m.stats().strict_invalidations >= 1);
    // The real knocker still gets in, even with the sweep going on around it.
    h.syn(ME, 7000);
    h.syn(OTHER, 7000);
    h.syn(ME, 8000);
    assert_eq!(opens(&h.syn(ME, 9000)), vec![(h.id("asc"), ME)]);
}

#[test]
fn strict_door_is_invalidated_by_any_syn_or_datagram_but_not_by_acks() {
    let mut h = Harness::new(vec![door("s", &[7000, 8000]).with_strict(true)]);
    h.syn(ME, 7000);
    // An ACK (an established connection's traffic) is not a touch.
    assert!(h.tcp(ME, 22, TcpFlags::ACK).is_empty());
    assert!(h.tcp(ME, 22, TcpFlags::SYN | TcpFlags::ACK).is_empty());
    assert_eq!(opens(&h.syn(ME, 8000)).len(), 1);
    h.syn(ME, 7000);
    let ds = h.udp(ME, 53);
    assert!(
        matches!(ds[..], [Decision::Invalidated { step: 1, .. }]),
        "{ds:?}"
    );
    assert!(opens(&h.syn(ME, 8000)).is_empty());
    // A non-strict door next to it is not disturbed by ports no door uses.
    let mut h = Harness::new(vec![
        door("s", &[7000, 8000]).with_strict(true),
        door("n", &[7100, 8100]),
    ]);
    h.syn(ME, 7100);
    assert!(h.syn(ME, 22).is_empty());
    assert_eq!(opens(&h.syn(ME, 8100)).len(), 1);
}

#[test]
fn strict_door_listens_to_every_syn_and_datagram() {
    let m = Matcher::new(
        vec![door("s", &[7000])
            .with_strict(true)
            .with_target(Some(SERVER))],
        Limits::default(),
    )
    .unwrap();
    let l = m.listen_set();
    assert!(l
        .iter()
        .any(|e| e.any_port && e.proto == Proto::Tcp && e.dst == Some(SERVER)));
    assert!(l.iter().any(|e| e.any_port && e.proto == Proto::Udp));
    let syn = Event::tcp(ME, SERVER, 12345, TcpFlags::SYN, Timestamp::ZERO);
    let ack = Event::tcp(ME, SERVER, 12345, TcpFlags::ACK, Timestamp::ZERO);
    assert!(l.iter().any(|e| e.matches(&syn)));
    assert!(!l.iter().any(|e| e.matches(&ack)));
}

fn blocked(ds: &[Decision]) -> Vec<IpAddr> {
    ds.iter()
        .filter_map(|d| match *d {
            Decision::Blocked { src, .. } => Some(src),
            _ => None,
        })
        .collect()
}

#[test]
fn blacklist_blocks_a_sweeper_until_the_block_expires() {
    let mut h = Harness::new(vec![door("s", &[7000, 8000, 9000])
        .with_strict(true)
        .with_grant_lifetime(Some(Duration::from_secs(5)))]);
    h.m.set_blacklist(Some(Blacklist::new(
        3,
        Duration::from_secs(60),
        Duration::from_secs(180),
    )));
    let ds = sweep(&mut h, OTHER);
    assert_eq!(blocked(&ds), vec![OTHER]);
    let until = ds
        .iter()
        .find_map(|d| match d {
            Decision::Blocked { until, .. } => Some(*until),
            _ => None,
        })
        .unwrap();
    assert_eq!(until, h.now + Duration::from_secs(180));
    assert!(h.m.stats().blocked_events > 50_000);
    // Even the right sequence from the blocked source does nothing.
    for p in [7000, 8000, 9000] {
        assert!(h.syn(OTHER, p).is_empty());
    }
    // Others are not affected.
    h.syn(ME, 7000);
    h.syn(ME, 8000);
    assert_eq!(opens(&h.syn(ME, 9000)).len(), 1);
    // The block ends on time, and then the source may knock again.
    h.at(179_000);
    assert!(!h
        .timeout()
        .iter()
        .any(|d| matches!(d, Decision::Unblocked { .. })));
    h.at(181_000);
    assert!(h
        .timeout()
        .iter()
        .any(|d| matches!(d, Decision::Unblocked { src, .. } if *src == OTHER)));
    h.syn(OTHER, 7000);
    h.syn(OTHER, 8000);
    assert_eq!(opens(&h.syn(OTHER, 9000)).len(), 1);
    assert_eq!(h.m.stats().suspects, 0);
}

#[test]
fn blacklist_counts_invalid_attempts_within_the_window_only() {
    let mut h = Harness::new(vec![door("d", &[7000, 8000])]);
    h.m.set_blacklist(Some(Blacklist::new(
        2,
        Duration::from_secs(10),
        Duration::from_secs(30),
    )));
    h.syn(ME, 7000);
    h.syn(ME, 7000); // invalid (no allow_repeat): strike 1
    h.at(11_000);
    h.timeout(); // window over: forgotten
    h.syn(ME, 7000);
    assert!(
        blocked(&h.syn(ME, 7000)).is_empty(),
        "strike 1 of a new window"
    );
    h.syn(ME, 7000);
    assert_eq!(blocked(&h.syn(ME, 7000)), vec![ME]);
    // Without strict doors, touches of other ports never reach the matcher's
    // counting, and a blocked source's knocks are ignored.
    assert!(h.syn(ME, 7000).is_empty());
    h.m.set_blacklist(None);
    assert!(matches!(h.drain()[..], [Decision::Unblocked { .. }]));
}

#[test]
fn lifting_the_blacklist_unblocks_by_block_end_then_address() {
    let mut h = Harness::new(vec![door("d", &[7000, 8000])]);
    let d = h.id("d");
    h.m.set_blacklist(Some(Blacklist::new(
        1,
        Duration::from_secs(10),
        Duration::from_secs(30),
    )));
    let srcs: Vec<IpAddr> = (0..20u8)
        .map(|i| IpAddr::V4(Ipv4Addr::new(198, 18, 1, 40 - i)))
        .collect();
    for (i, &src) in srcs.iter().enumerate() {
        h.at(if i < 10 { 10 } else { 0 });
        h.syn(src, 7000);
        assert_eq!(blocked(&h.syn(src, 7000)), vec![src]);
    }
    let mut want: Vec<(Timestamp, IpAddr)> = h.m.blocks().map(|(_, s, u)| (u, s)).collect();
    assert_eq!(want.len(), 20);
    assert!(want.windows(2).all(|w| w[0] < w[1]), "blocks() is sorted");
    h.m.set_blacklist(None);
    let got: Vec<IpAddr> = h
        .drain()
        .iter()
        .map(|x| match *x {
            Decision::Unblocked { door, src } if door == d => src,
            _ => panic!("{x:?}"),
        })
        .collect();
    want.sort();
    assert_eq!(got, want.iter().map(|w| w.1).collect::<Vec<_>>());
    assert_eq!(h.m.blocks().count(), 0);
}

#[test]
fn restored_blocks_ignore_the_source_then_unblock() {
    let mut h = Harness::new(vec![door("d", &[7000, 8000])]);
    let d = h.id("d");
    let until = h.now + Duration::from_secs(30);
    assert!(!h.m.restore_block(d, ME, until), "no rule, no block");
    h.m.set_blacklist(Some(Blacklist::new(
        3,
        Duration::from_secs(10),
        Duration::from_secs(60),
    )));
    h.syn(ME, 7000);
    assert!(h.m.restore_block(d, ME, until));
    assert!(h.drain().is_empty(), "no Blocked for a restored block");
    assert!(!h.m.restore_block(d, ME, until), "blocked already");
    assert!(!h.m.restore_block(DoorId(7), OTHER, until), "unknown door");
    assert_eq!(h.m.blocks().collect::<Vec<_>>(), vec![(d, ME, until)]);
    assert_eq!(h.m.stats().sources, 0, "its attempt is dropped");
    assert!(h.syn(ME, 7000).is_empty());
    h.now = until;
    assert_eq!(h.timeout(), vec![Decision::Unblocked { door: d, src: ME }]);
    h.syn(ME, 7000);
    assert_eq!(opens(&h.syn(ME, 8000)).len(), 1);
}

#[test]
fn used_windows_survive_a_restart() {
    let mut h = Harness::new(vec![Door::windowed("w")]);
    let id = h.id("w");
    windowed(&mut h, 10);
    h.syn(ME, 10_010);
    assert_eq!(opens(&h.udp(ME, 20_010)).len(), 1);
    let used = h.m.used_windows(id);
    assert_eq!(used, vec![10]);
    // A new process: the same door, its windows, then the saved used ones.
    let mut h2 = Harness::new(vec![Door::windowed("w")]);
    windowed(&mut h2, 10);
    h2.syn(ME, 10_011); // an attempt on window 11, which is not used
    h2.syn(OTHER, 10_010); // and one on window 10, which goes dead
    h2.m.restore_used_windows(id, &used);
    assert!(opens(&h2.udp(OTHER, 20_010)).is_empty());
    h2.syn(ME6, 10_010);
    assert!(
        opens(&h2.udp(ME6, 20_010)).is_empty(),
        "refused from anyone"
    );
    assert_eq!(opens(&h2.udp(ME, 20_011)).len(), 1);
    assert_eq!(h2.m.used_windows(id), vec![10, 11]);
    // At most USED_WINDOWS, newest last; other doors have none.
    let many: Vec<u64> = (100..120).collect();
    h2.m.restore_used_windows(id, &many);
    assert_eq!(h2.m.used_windows(id), (112..120).collect::<Vec<_>>());
    assert!(h2.m.used_windows(DoorId(5)).is_empty());
}

#[test]
fn blacklist_table_is_bounded() {
    let mut h = Harness::with_limits(
        vec![door("d", &[7000, 8000])],
        Limits::default().with_max_suspects(16),
    );
    h.m.set_blacklist(Some(Blacklist::new(
        5,
        Duration::from_secs(60),
        Duration::from_secs(60),
    )));
    for i in 0..1000u32 {
        let src = IpAddr::V4(Ipv4Addr::from(0xC612_0000 + i));
        h.syn(src, 7000);
        h.syn(src, 7000);
    }
    assert!(h.m.stats().suspects <= 16);
    assert_eq!(h.m.stats().strikes, 1000);
}

fn windowed(h: &mut Harness, base: u64) {
    let id = h.id("w");
    let pairs = (base - 1..=base + 1)
        .map(|w| {
            (
                w,
                vec![Step::tcp(10_000 + w as u16), Step::udp(20_000 + w as u16)],
            )
        })
        .collect();
    h.m.set_windows(id, pairs).unwrap();
}

#[test]
fn derived_windows_each_open_once_and_move_with_time() {
    let mut h = Harness::new(vec![
        Door::windowed("w").with_grant_lifetime(Some(Duration::from_secs(5)))
    ]);
    // Dormant until windows are set.
    assert!(h.m.listen_set().is_empty());
    windowed(&mut h, 100);
    assert_eq!(h.m.listen_set().len(), 6);
    // Any of w-1, w, w+1 opens.
    for (w, src) in [(99u16, ME), (101, ME6)] {
        h.syn(src, 10_000 + w);
        assert_eq!(opens(&h.udp(src, 20_000 + w)).len(), 1, "window {w}");
    }
    // A replay of a used window's sequence is refused, from anyone.
    h.syn(OTHER, 10_099);
    assert!(opens(&h.udp(OTHER, 20_099)).is_empty());
    h.syn(OTHER, 10_100);
    assert_eq!(opens(&h.udp(OTHER, 20_100)).len(), 1);
    assert_eq!(h.m.listen_set().len(), 0, "all three used");
    // The next window: 100 and 101 stay used, 102 is new.
    windowed(&mut h, 101);
    assert_eq!(h.m.listen_set().len(), 2);
    // An attempt in flight on a window that stays keeps going across the change.
    windowed(&mut h, 103);
    let fresh = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 9));
    h.syn(fresh, 10_104);
    windowed(&mut h, 104);
    assert_eq!(opens(&h.udp(fresh, 20_104)).len(), 1);
    // ... and one on a window that goes is dropped.
    h.syn(ME6, 10_103);
    windowed(&mut h, 105);
    assert!(opens(&h.udp(ME6, 20_103)).is_empty());
}

#[test]
fn set_windows_checks_its_input_and_survives_reload() {
    let mut h = Harness::new(vec![Door::windowed("w"), door("plain", &[1, 2])]);
    let plain = h.id("plain");
    assert!(matches!(
        h.m.set_windows(plain, vec![]),
        Err(DoorError::NotWindowed { .. })
    ));
    let id = h.id("w");
    assert!(matches!(
        h.m.set_windows(id, vec![(1, vec![Step::tcp(1)]), (4, vec![Step::tcp(2)])]),
        Err(DoorError::BadWindows { .. })
    ));
    windowed(&mut h, 10);
    h.syn(ME, 10_010);
    assert_eq!(opens(&h.udp(ME, 20_010)).len(), 1);
    // A reload with the same definition keeps the door, its windows and its memory.
    h.m.replace_doors(vec![Door::windowed("w"), door("plain", &[1, 2])])
        .unwrap();
    assert_eq!(h.id("w"), id);
    h.syn(ME, 10_010);
    assert!(opens(&h.udp(ME, 20_010)).is_empty());
    // A changed door (new id) still remembers the used window.
    h.m.replace_doors(vec![
        Door::windowed("w").with_seq_timeout(Duration::from_secs(9))
    ])
    .unwrap();
    let id2 = h.id("w");
    assert_ne!(id2, id);
    windowed(&mut h, 10);
    h.syn(ME, 10_010);
    assert!(opens(&h.udp(ME, 20_010)).is_empty());
    h.syn(ME, 10_011);
    assert_eq!(opens(&h.udp(ME, 20_011)).len(), 1);
}

/// A full grant table closes the grant opened or extended longest ago.
#[test]
fn full_grant_table_closes_the_least_recently_opened_grant() {
    let d = door("g", &[7000]).with_grant_lifetime(Some(Duration::from_secs(60)));
    let mut h = Harness::with_limits(vec![d], Limits::default().with_max_grants(2));
    let third = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 4));
    h.at(0).syn(ME, 7000);
    h.at(1).syn(OTHER, 7000);
    h.at(2).syn(ME, 7000); // extended: now the most recent
    let ds = h.at(3).syn(third, 7000);
    assert!(
        ds.iter()
            .any(|d| matches!(d, Decision::Close { src, .. } if *src == OTHER)),
        "{ds:?}"
    );
    assert_eq!(h.m.stats().grants_evicted, 1);
    assert_eq!(h.m.stats().grants, 2);
    let open: Vec<IpAddr> = h.m.open_grants().map(|g| g.1).collect();
    assert_eq!(open, vec![ME, third]);
}

#[test]
fn authorized_door_opens_extends_and_closes_without_knocks() {
    let spa = Door::with_sequences("spa", Sequences::Authorized)
        .with_grant_lifetime(Some(Duration::from_secs(30)));
    let knock = Door::new("ssh", vec![Step::tcp(7000)]);
    let mut h = Harness::new(vec![spa, knock]);
    let (id, ssh) = (h.id("spa"), h.id("ssh"));
    // Nothing to listen for on its behalf; knocks never open it.
    assert_eq!(h.m.listen_set().len(), 1);
    assert!(
        !h.m.handle_authorized(h.now, ssh, ME, None),
        "not an authorized door"
    );
    assert!(h.drain().is_empty());
    assert!(h
        .m
        .handle_authorized(h.now, id, ME, Some(Duration::from_secs(5))));
    assert_eq!(opens(&h.drain()), vec![(id, ME)]);
    // Again 2 s later: the same grant, extended to 2 + 30 s.
    h.at(2_000);
    assert!(h.m.handle_authorized(h.now, id, ME, None));
    assert!(matches!(h.drain().as_slice(), [Decision::Extended { .. }]));
    h.at(31_000);
    assert!(h.timeout().is_empty());
    h.at(32_000);
    assert!(matches!(h.timeout().as_slice(), [Decision::Close { src, .. }] if *src == ME));
    // An IPv4-mapped address is the IPv4 address.
    let mapped: IpAddr = "::ffff:198.18.0.2".parse().unwrap();
    assert!(h.m.handle_authorized(h.now, id, mapped, None));
    assert_eq!(opens(&h.drain()), vec![(id, ME)]);
}
