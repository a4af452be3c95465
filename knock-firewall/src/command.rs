//! knockd's shell commands: `%IP%` substitution, and a bounded pool that runs
//! commands somebody else has rendered and timed.

use std::collections::VecDeque;
use std::fmt;
use std::io::Read;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::error::Error;

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

/// One door's command templates (knockd's `start_command`,
/// `start_command_6`, `stop_command`, `stop_command_6`), rendered for one
/// address with the `_6` fallback. When they run is not their business.
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
}

impl DoorCommands {
    /// A door that runs `start` and nothing else.
    pub fn new(start: impl Into<String>) -> Self {
        DoorCommands {
            start: start.into(),
            start6: None,
            stop: None,
            stop6: None,
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

/// Configuration of a [`CommandRunner`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunnerConfig {
    /// How many commands may run at once (at least 1; default 4).
    pub workers: usize,
    /// How many commands may wait for a worker (at least 1; default 1024);
    /// beyond that [`CommandRunner::run`] fails with [`Error::QueueFull`].
    pub queue: usize,
    /// The shell, run as `SHELL -c COMMAND` (default `/bin/sh`).
    pub shell: PathBuf,
    /// A command (with its children) still running after this long is
    /// killed (default 60 s).
    pub max_run_time: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            workers: 4,
            queue: 1024,
            shell: PathBuf::from("/bin/sh"),
            max_run_time: Duration::from_secs(60),
        }
    }
}

/// A command to run, already rendered (`%IP%` substituted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    /// The owner's identifier, handed back in [`Done::id`].
    pub id: u64,
    /// What the command is for, for messages: `openSSH: start for 198.18.0.2`.
    pub what: String,
    /// The shell command line.
    pub command: String,
}

/// How a command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It exited with status 0.
    Succeeded,
    /// It exited with another status, or a signal it did not get from us
    /// ended it (`code` is then `None`).
    Failed {
        /// The exit status.
        code: Option<i32>,
        /// The start of its stderr, trimmed (at most about 200 bytes).
        stderr: String,
    },
    /// It was still running after `max_run_time`; its process group got SIGKILL.
    Killed {
        /// How long it had run.
        after: Duration,
    },
    /// The shell could not be started.
    SpawnFailed {
        /// Why.
        error: String,
    },
}

impl Outcome {
    /// Whether the command exited with status 0.
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Succeeded)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Succeeded => f.write_str("succeeded"),
            Outcome::Failed {
                code: Some(c),
                stderr,
            } if stderr.is_empty() => {
                write!(f, "failed with exit status {c}")
            }
            Outcome::Failed {
                code: Some(c),
                stderr,
            } => {
                write!(f, "failed with exit status {c}: {stderr}")
            }
            Outcome::Failed { code: None, stderr } if stderr.is_empty() => {
                f.write_str("ended by a signal")
            }
            Outcome::Failed { code: None, stderr } => write!(f, "ended by a signal: {stderr}"),
            Outcome::Killed { after } => write!(f, "killed after {after:?}"),
            Outcome::SpawnFailed { error } => write!(f, "could not start: {error}"),
        }
    }
}

/// A finished job, as [`CommandRunner::poll_done`] returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Done {
    /// [`Job::id`].
    pub id: u64,
    /// [`Job::what`].
    pub what: String,
    /// [`Job::command`].
    pub command: String,
    /// How it ended.
    pub outcome: Outcome,
    /// From the start of the process to its end (not counting time in the queue).
    pub took: Duration,
}

/// Counters of a [`CommandRunner`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommandStats {
    /// Commands that exited 0.
    pub succeeded: u64,
    /// Commands that exited non-zero, died of a signal or could not start.
    pub failed: u64,
    /// Commands killed at `max_run_time`.
    pub killed: u64,
    /// Jobs refused because the queue was full, or discarded unstarted when
    /// the runner was dropped.
    pub dropped: u64,
}

/// How much of a command's stderr [`Outcome::Failed`] keeps.
const STDERR_EXCERPT: usize = 200;
/// The longest pause between two looks at a running command.
const MAX_NAP: Duration = Duration::from_millis(20);

type Notify = Arc<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct Inner {
    queue: VecDeque<Job>,
    done: VecDeque<Done>,
    running: usize,
    /// Worker threads started so far (they start on demand).
    workers: usize,
    /// Workers waiting for a job.
    idle: usize,
    shutdown: bool,
    stats: CommandStats,
}

struct Shared {
    inner: Mutex<Inner>,
    work: Condvar,
    notify: Mutex<Option<Notify>>,
    cfg: RunnerConfig,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs knockd-style shell commands on a bounded pool of worker threads.
///
/// The runner decides nothing: the owner (the engine) renders each command
/// ([`substitute`], [`DoorCommands`]), decides when it is due, hands it over
/// with [`run`](Self::run), which only enqueues, and collects the outcome with
/// [`poll_done`](Self::poll_done), woken by the callback of
/// [`with_notify`](Self::with_notify).
///
/// * At most `workers` commands run at once (threads start on demand), at most
///   `queue` wait; a burst beyond that is refused, never forked without limit.
/// * Each command runs as `SHELL -c COMMAND`, stdin and stdout on
///   `/dev/null`, stderr captured (its first 200 bytes are kept), in a process
///   group of its own: at `max_run_time` the whole group gets SIGKILL, so a
///   `sleep` under `sh -c` dies with its shell.
/// * Dropping the runner returns at once: jobs not started are discarded,
///   running commands finish on their own (or are killed at
///   `max_run_time`) and their outcome is not reported.
///
/// ```
/// use std::time::Duration;
/// use knock_firewall::{CommandRunner, Job, Outcome, RunnerConfig};
///
/// let runner = CommandRunner::new(RunnerConfig::default());
/// runner.run(Job { id: 1, what: "test: start for 198.18.0.2".into(), command: "exit 3".into() })?;
/// let done = loop {
///     if let Some(d) = runner.poll_done() {
///         break d;
///     }
///     std::thread::sleep(Duration::from_millis(5));
/// };
/// assert_eq!(done.id, 1);
/// assert!(matches!(done.outcome, Outcome::Failed { code: Some(3), .. }));
/// # Ok::<(), knock_firewall::Error>(())
/// ```
pub struct CommandRunner {
    shared: Arc<Shared>,
}

impl fmt::Debug for CommandRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = self.shared.lock();
        f.debug_struct("CommandRunner")
            .field("cfg", &self.shared.cfg)
            .field("queued", &g.queue.len())
            .field("running", &g.running)
            .field("done", &g.done.len())
            .field("stats", &g.stats)
            .finish()
    }
}

impl CommandRunner {
    /// A runner with no thread yet: workers start with the first jobs.
    pub fn new(cfg: RunnerConfig) -> CommandRunner {
        let cfg = RunnerConfig {
            workers: cfg.workers.max(1),
            queue: cfg.queue.max(1),
            ..cfg
        };
        CommandRunner {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner::default()),
                work: Condvar::new(),
                notify: Mutex::new(None),
                cfg,
            }),
        }
    }

    /// Sets a callback called from a worker thread after each [`Done`] is
    /// queued, so that the owner can wake its event loop and call
    /// [`poll_done`](Self::poll_done). It should be quick (write to an
    /// eventfd, send on a channel).
    pub fn with_notify(self, f: impl Fn() + Send + Sync + 'static) -> Self {
        *self
            .shared
            .notify
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(f));
        self
    }

    /// Queues `job`. Never waits for a command; fails with
    /// [`Error::QueueFull`] (naming `job.what`) when `queue` jobs are already
    /// waiting, or [`Error::Io`] when not even one worker thread can start.
    pub fn run(&self, job: Job) -> Result<(), Error> {
        let shared = &self.shared;
        let mut g = shared.lock();
        if g.queue.len() >= shared.cfg.queue {
            g.stats.dropped += 1;
            return Err(Error::QueueFull {
                what: job.what,
                capacity: shared.cfg.queue,
            });
        }
        g.queue.push_back(job);
        if g.queue.len() > g.idle && g.workers < shared.cfg.workers {
            let n = g.workers;
            let me = Arc::clone(shared);
            let spawned = std::thread::Builder::new()
                .name(format!("knock-cmd-{n}"))
                .spawn(move || worker(&me));
            match spawned {
                Ok(_detached) => g.workers += 1,
                Err(source) if g.workers == 0 => {
                    let job = g.queue.pop_back();
                    return Err(Error::Io {
                        what: format!(
                            "{}: start a command worker",
                            job.map(|j| j.what).unwrap_or_default()
                        ),
                        source,
                    });
                }
                // The workers already there will get to it.
                Err(e) => tracing::warn!(error = %e, "cannot start another command worker"),
            }
        }
        shared.work.notify_one();
        Ok(())
    }

    /// The next finished job, in completion order (`None`: none finished
    /// since the last call).
    pub fn poll_done(&self) -> Option<Done> {
        self.shared.lock().done.pop_front()
    }

    /// Jobs queued or running.
    pub fn busy(&self) -> usize {
        let g = self.shared.lock();
        g.queue.len() + g.running
    }

    /// Counters so far.
    pub fn stats(&self) -> CommandStats {
        self.shared.lock().stats
    }
}

impl Drop for CommandRunner {
    /// Returns at once: discards the jobs that have not started and tells the
    /// workers to stop; running commands are not waited for.
    fn drop(&mut self) {
        let mut g = self.shared.lock();
        g.shutdown = true;
        g.stats.dropped += g.queue.len() as u64;
        g.queue.clear();
        g.done.clear();
        drop(g);
        self.shared.work.notify_all();
    }
}

fn worker(shared: &Shared) {
    let mut g = shared.lock();
    loop {
        if g.shutdown {
            return;
        }
        let Some(job) = g.queue.pop_front() else {
            g.idle += 1;
            g = shared.work.wait(g).unwrap_or_else(PoisonError::into_inner);
            g.idle -= 1;
            continue;
        };
        g.running += 1;
        drop(g);
        let (outcome, took) = execute(&shared.cfg, &job.command);
        g = shared.lock();
        g.running -= 1;
        if g.shutdown {
            return; // nobody will ask
        }
        match outcome {
            Outcome::Succeeded => g.stats.succeeded += 1,
            Outcome::Failed { .. } | Outcome::SpawnFailed { .. } => g.stats.failed += 1,
            Outcome::Killed { .. } => g.stats.killed += 1,
        }
        g.done.push_back(Done {
            id: job.id,
            what: job.what,
            command: job.command,
            outcome,
            took,
        });
        drop(g);
        let notify = shared
            .notify
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(f) = notify {
            f();
        }
        g = shared.lock();
    }
}

/// The first bytes of a command's stderr; the rest is read and thrown away
/// so that the command never blocks on a full pipe.
#[derive(Default)]
struct Excerpt {
    kept: Vec<u8>,
    truncated: bool,
}

impl Excerpt {
    fn push(&mut self, data: &[u8]) {
        let room = STDERR_EXCERPT.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&data[..room.min(data.len())]);
        self.truncated |= data.len() > room;
    }

    fn text(&self) -> String {
        let s = String::from_utf8_lossy(&self.kept);
        let s = s.trim();
        if self.truncated {
            format!("{s}...")
        } else {
            s.to_owned()
        }
    }
}

/// What [`read_some`] found on a command's stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pipe {
    /// Some bytes (added to the excerpt).
    Data,
    /// Nothing within the wait.
    Quiet,
    /// End of file (or a broken pipe): stop watching it.
    Closed,
}

/// Reads what `stderr` has within `wait`.
fn read_some(stderr: &mut ChildStderr, wait: Duration, out: &mut Excerpt) -> Pipe {
    let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
    let mut fds = [PollFd::new(stderr.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, timeout) {
        Ok(0) | Err(nix::errno::Errno::EINTR) => return Pipe::Quiet,
        Ok(_) => {}
        Err(_) => return Pipe::Closed,
    }
    let mut buf = [0u8; 4096];
    // poll said readable (data or end of file): this read does not block.
    match stderr.read(&mut buf) {
        Ok(0) | Err(_) => Pipe::Closed,
        Ok(n) => {
            out.push(&buf[..n]);
            Pipe::Data
        }
    }
}

/// Runs one command to its end or its kill. Returns how it ended and how long it ran.
fn execute(cfg: &RunnerConfig, command: &str) -> (Outcome, Duration) {
    let started = Instant::now();
    let spawned = Command::new(&cfg.shell)
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // A group of its own (pgid = its pid), so the kill reaches its children.
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let error = format!("{}: {e}", cfg.shell.display());
            return (Outcome::SpawnFailed { error }, started.elapsed());
        }
    };
    let mut stderr = child.stderr.take();
    let mut excerpt = Excerpt::default();
    let deadline = started + cfg.max_run_time;
    let mut nap = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
        let now = Instant::now();
        if now >= deadline {
            kill_group(&mut child);
            return (
                Outcome::Killed {
                    after: started.elapsed(),
                },
                started.elapsed(),
            );
        }
        let wait = nap.min(deadline - now);
        match stderr.as_mut() {
            Some(s) => {
                if read_some(s, wait, &mut excerpt) == Pipe::Closed {
                    // End of file: the shell is probably exiting; look again soon.
                    stderr = None;
                    nap = Duration::from_millis(1);
                    continue;
                }
            }
            None => std::thread::sleep(wait),
        }
        nap = (nap * 2).min(MAX_NAP);
    };
    let took = started.elapsed();
    // What is left in the pipe; a background child may keep it open, so
    // take only what is already there (a bounded number of reads).
    if let Some(s) = stderr.as_mut() {
        for _ in 0..64 {
            if read_some(s, Duration::ZERO, &mut excerpt) != Pipe::Data {
                break;
            }
        }
    }
    let outcome = match status {
        Ok(st) if st.success() => Outcome::Succeeded,
        Ok(st) => Outcome::Failed {
            code: st.code(),
            stderr: with_signal(st, excerpt.text()),
        },
        Err(e) => {
            // Cannot wait for it: make sure it is gone, report why.
            kill_group(&mut child);
            Outcome::Failed {
                code: None,
                stderr: format!("waiting for the command: {e}"),
            }
        }
    };
    (outcome, took)
}

/// The stderr excerpt, with the signal named when one ended the command.
fn with_signal(st: ExitStatus, stderr: String) -> String {
    match st.signal() {
        Some(sig) if stderr.is_empty() => format!("killed by signal {sig}"),
        Some(sig) => format!("killed by signal {sig}: {stderr}"),
        None => stderr,
    }
}

/// SIGKILL to the command's process group, then reaps the shell.
fn kill_group(child: &mut Child) {
    // The shell has not been reaped yet (try_wait said it runs, or failed),
    // so its pid, which is also the group id, cannot have been reused.
    if let Ok(pgid) = i32::try_from(child.id()) {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
    let _ = child.kill(); // in case the group kill failed
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runner_can_be_shared_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<CommandRunner>();
        send_sync::<Done>();
    }

    #[test]
    fn excerpt_keeps_the_start() {
        let mut e = Excerpt::default();
        e.push(b"  short  ");
        assert_eq!(e.text(), "short");
        let mut e = Excerpt::default();
        e.push(&[b'a'; 150]);
        e.push(&[b'b'; 150]);
        let t = e.text();
        assert!(
            t.starts_with(&"a".repeat(150)) && t.ends_with("b..."),
            "{t}"
        );
        assert_eq!(t.len(), STDERR_EXCERPT + 3);
    }

    #[test]
    fn door_commands_fall_back_to_ipv4() {
        let d = DoorCommands::new("add %IP%").with_stop("del %IP%");
        let v6: IpAddr = "2001:db8::2".parse().unwrap();
        assert_eq!(d.start_for(v6), "add 2001:db8::2");
        assert_eq!(d.stop_for(v6).as_deref(), Some("del 2001:db8::2"));
        let d = d.with_start6("add6 %IP%").with_stop6("del6 %IP%");
        assert_eq!(d.start_for(v6), "add6 2001:db8::2");
        assert_eq!(d.stop_for(v6).as_deref(), Some("del6 2001:db8::2"));
        let v4: IpAddr = "198.18.0.2".parse().unwrap();
        assert_eq!(d.start_for(v4), "add 198.18.0.2");
        assert_eq!(DoorCommands::new("x").stop_for(v4), None);
    }
}
