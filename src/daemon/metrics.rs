//! The OpenMetrics (Prometheus) endpoint: `metrics = ADDR:PORT` in
//! `[options]`, or `--metrics`. Off unless asked for.
//!
//! # Design: the scrape wakes the loop
//! The counters live where they are counted and nowhere else: the capture
//! source's [`Stats`](knock_capture::Stats), the matcher's
//! [`Stats`](knock_core::Stats), the engine's
//! [`EngineStats`] and its per-door
//! [`DoorStats`]. Only the daemon's loop may read them (the capture source
//! is its own, and kernel counters are read with a syscall), so a scrape
//! asks the loop:
//!
//! 1. A thread of its own sleeps in `accept(2)` on the endpoint's socket:
//!    an idle daemon with the endpoint on still wakes nobody.
//! 2. On `GET /metrics` it raises a flag, writes one byte to the stream the
//!    loop's wait also watches (the one the command runner uses, see
//!    [`MultiSource::set_waker`](knock_capture::MultiSource::set_waker)),
//!    and waits, at most 5 s, for a [`MetricsSnapshot`].
//! 3. The loop, at the end of each turn, checks the flag (one atomic load:
//!    nothing else on the packet path) and, when it is raised, copies the
//!    counters into a snapshot and hands it over.
//! 4. The thread renders the snapshot with `prometheus-client` and answers.
//!
//! The other way round, the loop publishing its counters after every batch,
//! would cost a copy and a `getsockopt` per turn under a flood, or a timer
//! to throttle it: this way costs nothing until someone scrapes, and every
//! scrape sees one consistent moment. A loop that does not answer in time
//! (a long reload, or the daemon stopping) gets `503`.
//!
//! One connection is served at a time, each with a 5 s read and write
//! timeout; bind the endpoint to loopback or a management address.
//!
//! # Label sets
//! Only door names from the configuration, never an address. A reload
//! drops the series of doors that are gone.
//!
//! # Adding a metric
//! A field in [`MetricsSnapshot`], filled in
//! [`Daemon::metrics_snapshot`] from the counter that owns it, and one
//! line in `encode_snapshot` (`counter`, `gauge`, `door_counter` or
//! `labelled_counter` for a bounded label such as a reject reason, as
//! `spa_rejects` does over the verifier's fixed set of reasons).

use std::collections::HashMap;
use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use knock_capture::Source;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::{Daemon, DaemonError};
use crate::engine::{DoorStats, EngineStats, Level};

/// How long a scrape waits for the loop's snapshot.
pub(super) const ANSWER: Duration = Duration::from_secs(5);

/// Read and write timeout of one connection.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest request head read.
const MAX_REQUEST: usize = 8 * 1024;

/// The daemon's counters at one moment, as a scrape shows them.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// The capture source's counters.
    pub capture: knock_capture::Stats,
    /// The matcher's counters (gateway-wide).
    pub matcher: knock_core::Stats,
    /// The engine's counters.
    pub engine: EngineStats,
    /// Every configured door, in the configuration's order.
    pub doors: Vec<DoorMetrics>,
    /// Sources blocked now.
    pub blocked_sources: u64,
    /// The SPA verifier's counters (`None`: no SPA door).
    pub spa: Option<knock_spa::Stats>,
}

/// One door's counters in a [`MetricsSnapshot`].
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct DoorMetrics {
    /// The door's name (the only label).
    pub name: String,
    /// Its decisions so far.
    pub stats: DoorStats,
    /// Its grants open now.
    pub grants_open: u64,
}

impl MetricsSnapshot {
    /// The snapshot in the OpenMetrics text format (`# EOF` included).
    ///
    /// # Errors
    /// Only a formatter error (none with a `String`).
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut registry = Registry::with_prefix("knock");
        registry.register_collector(Box::new(Snap(Arc::new(self.clone()))));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

/// A snapshot as `prometheus-client` collects it.
#[derive(Debug)]
struct Snap(Arc<MetricsSnapshot>);

impl Collector for Snap {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        encode_snapshot(&self.0, &mut e)
    }
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let g = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

/// A counter family with one label `key` of bounded values.
fn labelled_counter<'a>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    key: &str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (label, v) in values {
        let labels = [(key, label)];
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A per-door counter family.
fn door_counter(
    e: &mut DescriptorEncoder,
    s: &MetricsSnapshot,
    name: &str,
    help: &str,
    f: fn(&DoorStats) -> u64,
) -> fmt::Result {
    let values = s.doors.iter().map(|d| (d.name.as_str(), f(&d.stats)));
    labelled_counter(e, name, help, "door", values)
}

fn encode_snapshot(s: &MetricsSnapshot, e: &mut DescriptorEncoder) -> fmt::Result {
    let (c, m, g) = (&s.capture, &s.matcher, &s.engine);
    // Capture.
    counter(
        e,
        "capture_frames",
        "Frames the kernel filter passed and the daemon read.",
        c.received,
    )?;
    counter(
        e,
        "capture_knocks",
        "Frames that parsed as knocks for the listen set.",
        c.events,
    )?;
    counter(
        e,
        "capture_rejected",
        "Frames the parser rejected (malformed, unsupported).",
        c.rejected_total(),
    )?;
    counter(
        e,
        "capture_not_for_host",
        "Frames not addressed to this host (another host's, broadcast, forwarded).",
        c.not_for_host,
    )?;
    counter(
        e,
        "capture_kernel_drops",
        "Frames the kernel dropped for lack of buffer space.",
        c.kernel_drops,
    )?;
    counter(
        e,
        "capture_interface_failures",
        "Times capture on an interface failed or could not start.",
        c.interface_failures,
    )?;
    // Matcher, gateway-wide (what belongs to no single door).
    counter(e, "matcher_events", "Knocks the matcher handled.", m.events)?;
    counter(
        e,
        "matcher_ignored",
        "Knocks no door listens to.",
        m.ignored,
    )?;
    counter(
        e,
        "matcher_evicted",
        "Attempts dropped because the source table was full.",
        m.evicted,
    )?;
    counter(
        e,
        "blocked_knocks",
        "Knocks ignored because their source is blocked.",
        m.blocked_events,
    )?;
    gauge(
        e,
        "sources_tracked",
        "Sources with an attempt in progress.",
        m.sources as u64,
    )?;
    gauge(
        e,
        "blocked_sources",
        "Sources blocked now.",
        s.blocked_sources,
    )?;
    // Single Packet Authorization (the reasons are a fixed set).
    if let Some(spa) = &s.spa {
        counter(
            e,
            "spa_accepted",
            "SPA requests that passed every check.",
            spa.accepted,
        )?;
        labelled_counter(
            e,
            "spa_rejects",
            "SPA datagrams refused, by reason.",
            "reason",
            spa.reasons().map(|(r, n)| (r.as_str(), n)),
        )?;
    }
    // Engine.
    counter(
        e,
        "open_failures",
        "Opens, extends and blocks a firewall sink or command refused.",
        g.apply_failures,
    )?;
    counter(
        e,
        "close_failures",
        "Closes and unblocks that failed (each try).",
        g.close_failures,
    )?;
    counter(
        e,
        "log_lines_suppressed",
        "Per-source log lines (stages, timeouts) summarised instead of written.",
        g.log_suppressed,
    )?;
    counter(
        e,
        "grants_restored",
        "Grants restored from the state file at start.",
        g.restored,
    )?;
    // Per door.
    door_counter(
        e,
        s,
        "door_stages",
        "Correct knocks (steps), the one that completes a sequence included.",
        |d| d.stages,
    )?;
    door_counter(
        e,
        s,
        "door_opens",
        "Sequences completed: the door opened.",
        |d| d.opens,
    )?;
    door_counter(
        e,
        s,
        "door_extends",
        "Sequences completed again while a grant was open.",
        |d| d.extends,
    )?;
    door_counter(e, s, "door_closes", "Grants whose lifetime ended.", |d| {
        d.closes
    })?;
    door_counter(
        e,
        s,
        "door_expiries",
        "Attempts that ran out of time.",
        |d| d.expiries,
    )?;
    door_counter(
        e,
        s,
        "door_invalidations",
        "Attempts ended by a wrong knock.",
        |d| d.invalidations,
    )?;
    door_counter(
        e,
        s,
        "door_blocks",
        "Sources blocked on a strike at this door.",
        |d| d.blocks,
    )?;
    let mut open = e.encode_descriptor(
        "door_grants_open",
        "Grants open now.",
        None,
        MetricType::Gauge,
    )?;
    for d in &s.doors {
        let labels = [("door", d.name.as_str())];
        ConstGauge::new(i64::try_from(d.grants_open).unwrap_or(i64::MAX))
            .encode(open.encode_family(&labels)?)?;
    }
    Ok(())
}

/// What the endpoint's thread and the loop share.
#[derive(Debug, Default)]
struct Shared {
    /// A scrape waits for a snapshot.
    wanted: AtomicBool,
    state: Mutex<Exchange>,
    answered: Condvar,
}

#[derive(Debug, Default)]
struct Exchange {
    /// Scrapes asked for, and answered, so far.
    asked: u64,
    done: u64,
    snapshot: Option<Arc<MetricsSnapshot>>,
}

impl Shared {
    /// Asks the loop for a snapshot (waking it through `poke`) and waits
    /// for it, at most [`ANSWER`].
    fn scrape(&self, poke: &UnixStream) -> Option<Arc<MetricsSnapshot>> {
        let mut st = self.state.lock().ok()?;
        st.asked += 1;
        let ticket = st.asked;
        self.wanted.store(true, Ordering::Release);
        // Non-blocking: a full buffer already wakes the loop.
        let _ = (&*poke).write(&[1]);
        let end = Instant::now() + ANSWER;
        while st.done < ticket {
            let left = end.checked_duration_since(Instant::now())?;
            st = self.answered.wait_timeout(st, left).ok()?.0;
        }
        st.snapshot.clone()
    }
}

/// The daemon's side of a running endpoint.
#[derive(Debug)]
pub(super) struct Endpoint {
    shared: Arc<Shared>,
}

impl Daemon {
    /// Serves OpenMetrics at `http://addr/metrics` from a thread that
    /// sleeps in `accept` (see the [module documentation](self)); scrapes
    /// are answered while [`Daemon::run`] runs. Returns the address bound
    /// (port 0 picks one).
    ///
    /// # Errors
    /// The address cannot be bound, or the loop cannot be woken.
    pub fn serve_metrics(&mut self, addr: SocketAddr) -> Result<SocketAddr, DaemonError> {
        let fail = |source: std::io::Error| DaemonError::Metrics { addr, source };
        let listener = TcpListener::bind(addr).map_err(fail)?;
        let bound = listener.local_addr().map_err(fail)?;
        let poke = self.poke.try_clone().map_err(fail)?;
        let shared = Arc::new(Shared::default());
        let theirs = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("knockd-metrics".into())
            .spawn(move || serve(&listener, &theirs, &poke))
            .map_err(fail)?;
        self.metrics = Some(Endpoint { shared });
        self.log.line(
            Level::Info,
            &format!("metrics: serving OpenMetrics on http://{bound}/metrics"),
        );
        Ok(bound)
    }

    /// The counters now. `source` is the capture source [`Daemon::run`] reads.
    pub fn metrics_snapshot<S: Source + ?Sized>(&self, source: &mut S) -> MetricsSnapshot {
        let matcher = self.engine.matcher();
        let mut open: HashMap<knock_core::DoorId, u64> = HashMap::new();
        for (door, ..) in matcher.open_grants() {
            *open.entry(door).or_default() += 1;
        }
        let doors = matcher
            .doors()
            .map(|(id, d)| DoorMetrics {
                name: d.name.clone(),
                stats: self.engine.door_stats(&d.name),
                grants_open: open.get(&id).copied().unwrap_or(0),
            })
            .collect();
        MetricsSnapshot {
            capture: source.stats(),
            matcher: matcher.stats(),
            engine: self.engine.stats(),
            doors,
            blocked_sources: matcher.blocks().count() as u64,
            spa: self.engine.spa_stats(),
        }
    }

    /// Hands a snapshot to a waiting scrape, if there is one (the end of
    /// each turn of [`Daemon::run`]).
    pub(super) fn answer_scrape<S: Source + ?Sized>(&mut self, source: &mut S) {
        let Some(m) = &self.metrics else {
            return;
        };
        if !m.shared.wanted.swap(false, Ordering::Acquire) {
            return;
        }
        let shared = Arc::clone(&m.shared);
        let snapshot = Arc::new(self.metrics_snapshot(source));
        if let Ok(mut st) = shared.state.lock() {
            st.snapshot = Some(snapshot);
            st.done = st.asked;
        }
        shared.answered.notify_all();
    }
}

/// The endpoint's thread: one connection at a time.
fn serve(listener: &TcpListener, shared: &Shared, poke: &UnixStream) {
    loop {
        match listener.accept() {
            Ok((conn, _)) => {
                if let Err(e) = answer(conn, shared, poke) {
                    tracing::debug!("metrics: {e}");
                }
            }
            Err(e) => {
                // Out of descriptors, say: no busy loop.
                tracing::warn!("metrics: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Reads a request head: up to the blank line, at most [`MAX_REQUEST`].
fn read_head(conn: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() > MAX_REQUEST {
            break;
        }
        match conn.read(&mut buf)? {
            0 => break,
            n => head.extend_from_slice(buf.get(..n).unwrap_or_default()),
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// Answers one connection.
fn answer(mut conn: TcpStream, shared: &Shared, poke: &UnixStream) -> std::io::Result<()> {
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    let head = read_head(&mut conn)?;
    let mut words = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let text = "text/plain; charset=utf-8";
    let (status, ctype, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => match shared.scrape(poke).map(|s| s.encode()) {
            Some(Ok(body)) => (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body,
            ),
            _ => (
                "503 Service Unavailable",
                text,
                "the daemon's loop did not answer in time\n".to_owned(),
            ),
        },
        ("GET" | "HEAD", _) => ("404 Not Found", text, "see /metrics\n".to_owned()),
        _ => ("405 Method Not Allowed", text, "GET /metrics\n".to_owned()),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status.starts_with("405") {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if method != "HEAD" {
        out.push_str(&body);
    }
    conn.write_all(out.as_bytes())?;
    conn.flush()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_renders_as_openmetrics_with_door_labels_only() {
        let mut s = MetricsSnapshot::default();
        s.capture.kernel_drops = 7;
        s.matcher.sources = 3;
        s.doors.push(DoorMetrics {
            name: "ssh".into(),
            stats: DoorStats {
                opens: 2,
                ..DoorStats::default()
            },
            grants_open: 1,
        });
        let text = s.encode().unwrap();
        for line in [
            "# TYPE knock_capture_kernel_drops counter",
            "knock_capture_kernel_drops_total 7",
            "knock_sources_tracked 3",
            "knock_door_opens_total{door=\"ssh\"} 2",
            "knock_door_stages_total{door=\"ssh\"} 0",
            "knock_door_grants_open{door=\"ssh\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn a_scrape_the_loop_does_not_answer_gives_up() {
        let shared = Shared::default();
        let (poke, _loop_end) = UnixStream::pair().unwrap();
        poke.set_nonblocking(true).unwrap();
        let t = Instant::now();
        assert!(shared.scrape(&poke).is_none());
        assert!(t.elapsed() >= ANSWER);
        assert!(shared.wanted.load(Ordering::Acquire));
    }
}
