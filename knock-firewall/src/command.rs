//! knockd-compatible shell commands, run by a bounded worker pool.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Read;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::Error;
use crate::grant::{unix_millis, Grant};
use crate::sink::{FirewallSink, Reconciled};
use crate::state::{self, Pending};

/// Replaces every `%IP%` in `template` with `ip` (knockd's only variable).
///
/// The address is the parsed [`IpAddr`], so it can only contain digits, hex
/// letters, dots and colons: nothing a shell would interpret.
///
/// ```
/// let ip = "198.18.0.2".parse().unwrap();
/// assert_eq!(
///     knock_firewall::substitute("iptables -A INPUT -s %IP% -j ACCEPT # %IP%", ip),
///     "iptables -A INPUT -s 198.18.0.2 -j ACCEPT # 198.18.0.2"
/// );
/// ```
pub fn substitute(template: &str, ip: IpAddr) -> String {
    template.replace("%IP%", &ip.to_string())
}

/// One door's commands (knockd's `start_command`, `start_command_6`,
/// `stop_command`, `stop_command_6`, `cmd_timeout`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DoorCommands {
    /// Run on open (IPv4, and IPv6 when `start6` is unset).
    pub start: String,
    /// Run on open for IPv6 knockers.
    pub start6: Option<String>,
    /// Run on close (IPv4, and IPv6 when `stop6` is unset).
    pub stop: Option<String>,
    /// Run on close for IPv6 knockers.
    pub stop6: Option<String>,
    /// knockd's `cmd_timeout`: how long after the open the stop command runs
    /// when the grant has no expiry of its own.
    pub cmd_timeout: Duration,
}

impl DoorCommands {
    /// A door that runs `start` and nothing else (knockd's default `cmd_timeout` of 10 s).
    pub fn new(start: impl Into<String>) -> Self {
        DoorCommands {
            start: start.into(),
            start6: None,
            stop: None,
            stop6: None,
            cmd_timeout: Duration::from_secs(10),
        }
    }

    /// Sets `start_command_6`.
    pub fn with_start6(mut self, cmd: impl Into<String>) -> Self {
        self.start6 = Some(cmd.into());
        self
    }

    /// Sets `stop_command`.
    pub fn with_stop(mut self, cmd: impl Into<String>) -> Self {
        self.stop = Some(cmd.into());
        self
    }

    /// Sets `stop_command_6`.
    pub fn with_stop6(mut self, cmd: impl Into<String>) -> Self {
        self.stop6 = Some(cmd.into());
        self
    }

    /// Sets `cmd_timeout`.
    pub fn with_cmd_timeout(mut self, t: Duration) -> Self {
        self.cmd_timeout = t;
        self
    }

    /// The start command for `ip`, `%IP%` substituted (`_6` falls back to the IPv4 one).
    pub fn start_for(&self, ip: IpAddr) -> String {
        let t = match (ip, &self.start6) {
            (IpAddr::V6(_), Some(s6)) => s6,
            _ => &self.start,
        };
        substitute(t, ip)
    }

    /// The stop command for `ip`, if any, `%IP%` substituted (`_6` falls back).
    pub fn stop_for(&self, ip: IpAddr) -> Option<String> {
        let t = match (ip, &self.stop6) {
            (IpAddr::V6(_), Some(s6)) => Some(s6),
            _ => self.stop.as_ref(),
        };
        t.map(|t| substitute(t, ip))
    }
}

/// Configuration of a [`CommandSink`].
#[derive(Clone, Debug)]
pub struct CommandConfig {
    /// Commands by door name.
    pub doors: HashMap<String, DoorCommands>,
    /// How many commands may run at once (at least 1).
    pub workers: usize,
    /// How many commands may wait; beyond that `open` fails with [`Error::QueueFull`].
    pub queue: usize,
    /// Where pending stop commands are kept across restarts (`None`: in memory only).
    pub state_file: Option<PathBuf>,
    /// The shell (`/bin/sh`, run as `sh -c COMMAND`).
    pub shell: PathBuf,
    /// A command still running after this long is killed.
    pub max_run_time: Duration,
}

impl Default for CommandConfig {
    fn default() -> Self {
        CommandConfig {
            doors: HashMap::new(),
            workers: 4,
            queue: 1024,
            state_file: None,
            shell: PathBuf::from("/bin/sh"),
            max_run_time: Duration::from_secs(60),
        }
    }
}

impl CommandConfig {
    /// Adds (or replaces) a door's commands.
    pub fn door(mut self, name: impl Into<String>, cmds: DoorCommands) -> Self {
        self.doors.insert(name.into(), cmds);
        self
    }

    /// Sets the state file.
    pub fn state_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.state_file = Some(path.into());
        self
    }
}

/// Counters of a [`CommandSink`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommandStats {
    /// Commands that exited 0.
    pub succeeded: u64,
    /// Commands that failed to start, exited non-zero or were killed.
    pub failed: u64,
    /// Commands refused because the queue was full.
    pub dropped: u64,
}

type Key = (String, IpAddr, u64);

#[derive(Debug)]
struct Job {
    key: Key,
    what: String,
    command: String,
}

#[derive(Default)]
struct Inner {
    queue: VecDeque<Job>,
    running: HashSet<Key>,
    pending: Vec<Pending>,
    dirty: bool,
    shutdown: bool,
    stats: CommandStats,
}

struct Shared {
    inner: Mutex<Inner>,
    work: Condvar,
    sched: Condvar,
    idle: Condvar,
    shell: PathBuf,
    max_run_time: Duration,
    capacity: usize,
    state_file: Option<PathBuf>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// knockd's `start_command`/`stop_command`, done right.
///
/// * Commands run on a pool of `workers` threads fed by a queue of at most
///   `queue` entries: [`open`](FirewallSink::open) only enqueues, so the
///   capture path never waits for a fork, and a burst never forks without
///   limit. Commands of the same grant run in order (a stop never overtakes
///   its start).
/// * Each command's exit status and stderr are logged with `tracing`.
/// * The stop command of an open grant is due at the grant's expiry (or
///   `cmd_timeout` after the open when it has none). It is kept in the state
///   file (temp file, fsync, rename), so after a restart the ones that are
///   due run at once and the others are rescheduled. An internal timer runs
///   due stops by itself; [`close`](FirewallSink::close) runs one early.
/// * [`block`](FirewallSink::block) is not supported.
pub struct CommandSink {
    shared: Arc<Shared>,
    doors: HashMap<String, DoorCommands>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for CommandSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandSink")
            .field("doors", &self.doors)
            .field("state_file", &self.shared.state_file)
            .finish_non_exhaustive()
    }
}

impl CommandSink {
    /// Starts the workers and the timer, and loads the state file (pending
    /// stops from an earlier run are rescheduled; due ones run at once).
    pub fn new(config: CommandConfig) -> Result<CommandSink, Error> {
        let pending = match &config.state_file {
            Some(p) => state::load(p)?,
            None => Vec::new(),
        };
        if !pending.is_empty() {
            tracing::info!(count = pending.len(), "restored pending stop commands");
        }
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                pending,
                ..Inner::default()
            }),
            work: Condvar::new(),
            sched: Condvar::new(),
            idle: Condvar::new(),
            shell: config.shell,
            max_run_time: config.max_run_time,
            capacity: config.queue.max(1),
            state_file: config.state_file,
        });
        let mut sink = CommandSink {
            shared,
            doors: config.doors,
            threads: Vec::new(),
        };
        for i in 0..config.workers.max(1) {
            let shared = Arc::clone(&sink.shared);
            sink.spawn(format!("knock-cmd-{i}"), move || worker(&shared))?;
        }
        let shared = Arc::clone(&sink.shared);
        sink.spawn("knock-cmd-timer".into(), move || scheduler(&shared))?;
        Ok(sink)
    }

    fn spawn(&mut self, name: String, f: impl FnOnce() + Send + 'static) -> Result<(), Error> {
        let h = std::thread::Builder::new()
            .name(name.clone())
            .spawn(f)
            .map_err(|source| Error::Io {
                what: format!("start thread {name}"),
                source,
            })?;
        self.threads.push(h);
        Ok(())
    }

    /// Counters so far.
    pub fn stats(&self) -> CommandStats {
        self.shared.lock().stats
    }

    /// How many stop commands are waiting for their time.
    pub fn pending_stops(&self) -> usize {
        self.shared.lock().pending.len()
    }

    /// Waits until no command is queued or running (pending stops that are
    /// not due yet don't count). Returns whether that happened within `timeout`.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut g = self.shared.lock();
        loop {
            if g.queue.is_empty() && g.running.is_empty() && !g.dirty {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = self
                .shared
                .idle
                .wait_timeout(g, (deadline - now).min(Duration::from_millis(50)))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn door(&self, what: &str, grant: &Grant) -> Result<&DoorCommands, Error> {
        self.doors
            .get(&grant.door)
            .ok_or_else(|| Error::UnknownDoor {
                what: what.to_owned(),
                door: grant.door.clone(),
            })
    }
}

fn key(grant: &Grant) -> Key {
    (grant.door.clone(), grant.src, grant.id)
}

/// Enqueues a job, or fails if the queue is full.
fn enqueue(shared: &Shared, g: &mut Inner, job: Job) -> Result<(), Error> {
    if g.queue.len() >= shared.capacity {
        g.stats.dropped += 1;
        tracing::warn!(what = %job.what, "command queue full, dropping command");
        return Err(Error::QueueFull {
            what: job.what,
            capacity: shared.capacity,
        });
    }
    g.queue.push_back(job);
    shared.work.notify_one();
    Ok(())
}

impl FirewallSink for CommandSink {
    type Error = Error;

    fn open(&mut self, grant: &Grant) -> Result<(), Error> {
        let what = format!("open {grant}");
        let door = self.door(&what, grant)?;
        let start = door.start_for(grant.src);
        let stop = door.stop_for(grant.src);
        let due = grant
            .expires
            .unwrap_or_else(|| SystemTime::now() + door.cmd_timeout);
        let shared = &*self.shared;
        let mut g = shared.lock();
        enqueue(
            shared,
            &mut g,
            Job {
                key: key(grant),
                what,
                command: start,
            },
        )?;
        if let Some(stop) = stop {
            let k = key(grant);
            g.pending
                .retain(|p| (p.door.as_str(), p.src, p.grant) != (k.0.as_str(), k.1, k.2));
            g.pending.push(Pending {
                door: grant.door.clone(),
                src: grant.src,
                grant: grant.id,
                due_ms: unix_millis(due),
                command: stop,
            });
            g.dirty = true;
            shared.sched.notify_one();
        }
        Ok(())
    }

    fn extend(&mut self, grant: &Grant) -> Result<(), Error> {
        let k = key(grant);
        let shared = &*self.shared;
        {
            let mut g = shared.lock();
            if let Some(p) = g
                .pending
                .iter_mut()
                .find(|p| (p.door.as_str(), p.src, p.grant) == (k.0.as_str(), k.1, k.2))
            {
                if let Some(e) = grant.expires {
                    p.due_ms = unix_millis(e);
                    g.dirty = true;
                    shared.sched.notify_one();
                }
                return Ok(());
            }
        }
        // Not known (its stop already ran, or another process opened it): open again.
        self.open(grant)
    }

    fn close(&mut self, grant: &Grant) -> Result<(), Error> {
        let k = key(grant);
        let shared = &*self.shared;
        let mut g = shared.lock();
        let Some(i) = g
            .pending
            .iter()
            .position(|p| (p.door.as_str(), p.src, p.grant) == (k.0.as_str(), k.1, k.2))
        else {
            return Ok(()); // already closed, or the door has no stop command
        };
        let p = g.pending.remove(i);
        let job = Job {
            key: k,
            what: format!("close {grant}"),
            command: p.command.clone(),
        };
        if let Err(e) = enqueue(shared, &mut g, job) {
            // Keep it; the timer retries it as soon as there is room.
            g.pending.push(Pending { due_ms: 0, ..p });
            shared.sched.notify_one();
            return Err(e);
        }
        g.dirty = true;
        shared.sched.notify_one();
        Ok(())
    }

    fn reconcile(&mut self, now: SystemTime) -> Result<Reconciled, Error> {
        let shared = &*self.shared;
        let mut g = shared.lock();
        let expired = run_due(shared, &mut g, unix_millis(now));
        shared.sched.notify_one();
        Ok(Reconciled {
            expired,
            leftovers: 0,
            kept: g.pending.len(),
        })
    }

    fn block(&mut self, src: IpAddr, _duration: Duration) -> Result<(), Error> {
        Err(Error::Unsupported {
            what: format!("block {src}"),
            sink: "command",
        })
    }
}

/// Moves due pending stops to the queue (as many as fit). Returns how many.
fn run_due(shared: &Shared, g: &mut Inner, now_ms: u64) -> usize {
    let mut moved = 0;
    while g.queue.len() < shared.capacity {
        let Some(i) = g.pending.iter().position(|p| p.due_ms <= now_ms) else {
            break;
        };
        let p = g.pending.remove(i);
        let what = format!("stop grant#{} of door `{}` for {}", p.grant, p.door, p.src);
        g.queue.push_back(Job {
            key: (p.door, p.src, p.grant),
            what,
            command: p.command,
        });
        shared.work.notify_one();
        g.dirty = true;
        moved += 1;
    }
    moved
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The timer: runs due stops and writes the state file when it changed.
fn scheduler(shared: &Shared) {
    let mut g = shared.lock();
    loop {
        let now = now_ms();
        if !g.shutdown {
            // (Not after shutdown: the workers may be gone; due stops stay in the file.)
            run_due(shared, &mut g, now);
        }
        if g.dirty {
            g.dirty = false;
            if let Some(path) = &shared.state_file {
                let snapshot = g.pending.clone();
                drop(g);
                if let Err(e) = state::save(path, &snapshot) {
                    tracing::error!(error = %e, "cannot write the state file");
                }
                g = shared.lock();
                shared.idle.notify_all();
                continue; // re-check: things may have changed meanwhile
            }
            shared.idle.notify_all();
        }
        if g.shutdown {
            return;
        }
        let next = g.pending.iter().map(|p| p.due_ms).min();
        let wait = match next {
            // Due but the queue is full: retry soon.
            Some(d) if d <= now => Duration::from_millis(20),
            // Re-read the wall clock at least every minute (it may jump).
            Some(d) => Duration::from_millis(d - now).min(Duration::from_secs(60)),
            // Nothing pending: sleep until open/close/reconcile/drop notifies
            // (no periodic wake-ups when idle).
            None => {
                g = shared.sched.wait(g).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
        };
        g = shared
            .sched
            .wait_timeout(g, wait)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

fn worker(shared: &Shared) {
    let mut g = shared.lock();
    loop {
        // The first job whose grant has no command running (per-grant order).
        let pos = g.queue.iter().position(|j| !g.running.contains(&j.key));
        if let Some(job) = pos.and_then(|i| g.queue.remove(i)) {
            g.running.insert(job.key.clone());
            drop(g);
            let ok = run_command(shared, &job);
            g = shared.lock();
            g.running.remove(&job.key);
            if ok {
                g.stats.succeeded += 1;
            } else {
                g.stats.failed += 1;
            }
            shared.work.notify_all();
            shared.idle.notify_all();
            continue;
        }
        if g.shutdown {
            return;
        }
        g = shared.work.wait(g).unwrap_or_else(PoisonError::into_inner);
    }
}

/// Runs one command through the shell, logs the outcome. Returns success.
fn run_command(shared: &Shared, job: &Job) -> bool {
    let started = Instant::now();
    let spawned = Command::new(&shared.shell)
        .arg("-c")
        .arg(&job.command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let e = Error::from_io(job.what.clone(), &shared.shell.to_string_lossy(), e);
            tracing::error!(error = %e, command = %job.command, "cannot run command");
            return false;
        }
    };
    // Drain stderr on the side so a chatty command cannot block on a full pipe.
    let reader = child.stderr.take().map(|mut s| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = (&mut s).take(64 * 1024).read_to_end(&mut buf);
            let _ = std::io::copy(&mut s, &mut std::io::sink());
            buf
        })
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if started.elapsed() >= shared.max_run_time => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => {
                tracing::error!(what = %job.what, error = %e, "waiting for command");
                break None;
            }
        }
    };
    let stderr = reader
        .and_then(|h| h.join().ok())
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match status {
        Some(st) if st.success() => {
            tracing::info!(what = %job.what, command = %job.command, elapsed_ms, stderr = %stderr, "command succeeded");
            true
        }
        Some(st) => {
            tracing::warn!(what = %job.what, command = %job.command, status = %st, elapsed_ms, stderr = %stderr, "command failed");
            false
        }
        None => {
            tracing::warn!(what = %job.what, command = %job.command, elapsed_ms, stderr = %stderr, "command killed after max_run_time");
            false
        }
    }
}

impl Drop for CommandSink {
    /// Lets queued and running commands finish, writes the state file and
    /// stops the threads. Pending stops stay in the state file.
    fn drop(&mut self) {
        {
            let mut g = self.shared.lock();
            g.shutdown = true;
            g.dirty = true;
        }
        self.shared.work.notify_all();
        self.shared.sched.notify_all();
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}
