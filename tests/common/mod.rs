//! The end-to-end harness shared by the namespace test files: our `knockd`
//! example in a server namespace with tcp/22 behind a firewall and a
//! listener on it, knocks from a client namespace.

// Test support code: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::time::Duration;

use knock_testnet::{wait_for, Pair, Profile};

/// The example `name`, built in this test's profile (once per run).
pub fn example_bin(name: &str) -> PathBuf {
    knock_testnet::example_bin(name, knock_testnet::Profile::SameAsTest).expect("build example")
}

/// A `/proc/PID/status` field in kB (`VmRSS`, `VmHWM`).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    proc_kib(pid, "status", field)
}

/// A field in kB of `/proc/PID/<file>` (`status`, `smaps_rollup`).
pub fn proc_kib(pid: u32, file: &str, field: &str) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/{file}"))
}

/// knockd.conf text for a command door `[cmd]` knocked with `sequence`:
/// its start command creates `opened-<source address>` in the server's temp
/// dir ([`Server::wait_opened`]), its stop command removes it 10 minutes
/// later.
pub fn touch_door(sequence: &str) -> String {
    format!(
        "
[cmd]
    sequence    = {sequence}
    seq_timeout = 5
    start_command = touch {{DIR}}/opened-%IP%
    stop_command  = rm -f {{DIR}}/opened-%IP%
    cmd_timeout = 600
"
    )
}

/// Captures with tcpdump, in `ns` on `iface`, what `filter` passes into
/// `pcap` while `f` runs: tcpdump is listening before `f` starts, and is
/// stopped cleanly (its file flushed) 300 ms after `f` returns. Its
/// messages go to `pcap` with the extension `log`.
pub fn capture_while(
    ns: &knock_testnet::Netns,
    iface: &str,
    filter: &str,
    pcap: &std::path::Path,
    f: impl FnOnce(),
) {
    let dump_log = pcap.with_extension("log");
    let mut dump = ns
        .command("tcpdump")
        .args(["-i", iface, "--immediate-mode", "-U", "-w"])
        .arg(pcap)
        .arg(filter)
        .stdout(Stdio::null())
        .stderr(fs::File::create(&dump_log).unwrap())
        .spawn()
        .unwrap();
    wait_for("tcpdump to listen", Duration::from_secs(10), || {
        fs::read_to_string(&dump_log).is_ok_and(|l| l.contains("listening on"))
    });
    f();
    std::thread::sleep(Duration::from_millis(300));
    let stopped = std::process::Command::new("kill")
        .args(["-INT", &dump.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    dump.wait().unwrap();
}

/// A step run on the namespaces before knockd starts.
type BeforeStart<'a> = Box<dyn FnOnce(&Pair) + 'a>;

/// How to set up a [`Server`].
pub struct Setup<'a> {
    conf: &'a str,
    files: Vec<(&'a str, &'a str, u32)>,
    drop_22: bool,
    client_addrs: Vec<&'a str>,
    mount: Option<(&'a str, bool)>,
    state: Option<&'a str>,
    args: Vec<&'a str>,
    env: Vec<(&'a str, &'a str)>,
    wrap: Vec<&'a str>,
    quiet: bool,
    events: bool,
    profile: Profile,
    before_start: Option<BeforeStart<'a>>,
}

impl<'a> Setup<'a> {
    /// knockd.conf text; `{DIR}` stands for the server's temp dir.
    pub fn new(conf: &'a str) -> Self {
        Setup {
            conf,
            files: Vec::new(),
            drop_22: true,
            client_addrs: Vec::new(),
            mount: None,
            state: None,
            args: Vec::new(),
            env: Vec::new(),
            wrap: Vec::new(),
            quiet: false,
            events: true,
            profile: Profile::SameAsTest,
            before_start: None,
        }
    }

    /// More knockd arguments after the usual ones (`-i kx0` adds an interface).
    pub fn args(mut self, args: &[&'a str]) -> Self {
        self.args.extend_from_slice(args);
        self
    }

    /// An environment variable for knockd (`NOTIFY_SOCKET`, say); `{DIR}`
    /// in `value` stands for the server's temp dir.
    pub fn env(mut self, key: &'a str, value: &'a str) -> Self {
        self.env.push((key, value));
        self
    }

    /// Runs knockd under this command line (`setpriv` with fewer
    /// capabilities, say): `wrap` then the knockd command line.
    pub fn wrap(mut self, wrap: &[&'a str]) -> Self {
        self.wrap.extend_from_slice(wrap);
        self
    }

    /// Starts knockd at its default verbosity (no `-v`): only warnings and
    /// errors reach `stderr.log`; the log file still gets every line.
    pub fn quiet(mut self) -> Self {
        self.quiet = true;
        self
    }

    /// Starts knockd without `--events-json` (its stdout then holds only
    /// what other options print, such as `--stats-json`).
    pub fn no_events(mut self) -> Self {
        self.events = false;
        self
    }

    /// Runs knockd as built with `profile` (default: the test's own).
    pub fn profile(mut self, profile: Profile) -> Self {
        self.profile = profile;
        self
    }

    /// Runs `f` on the namespaces before knockd starts (more links, say).
    pub fn before_start(mut self, f: impl FnOnce(&Pair) + 'a) -> Self {
        self.before_start = Some(Box::new(f));
        self
    }

    /// `--state-dir` is the temp dir's subdirectory `sub` (default: the
    /// temp dir itself).
    pub fn state_dir(mut self, sub: &'a str) -> Self {
        self.state = Some(sub);
        self
    }

    /// Runs knockd in a private mount namespace where the temp dir's
    /// subdirectory `sub` is a bind mount of itself, read-only from the
    /// start with `read_only` (a read-only filesystem as knockd sees it;
    /// [`Server::remount_read_only`] makes it read-only later). Nothing
    /// outside the daemon's own mount namespace changes.
    pub fn bind_mount(mut self, sub: &'a str, read_only: bool) -> Self {
        self.mount = Some((sub, read_only));
        self
    }

    /// A file written to the temp dir before knockd starts, with `mode`.
    pub fn file(mut self, name: &'a str, content: &'a str, mode: u32) -> Self {
        self.files.push((name, content, mode));
        self
    }

    /// Leave tcp/22 to the daemon's own firewall (nftables guards its ports).
    pub fn no_iptables_drop(mut self) -> Self {
        self.drop_22 = false;
        self
    }

    /// Another address for the client namespace (e.g. a neighbour in the /24).
    pub fn client_addr(mut self, cidr: &'a str) -> Self {
        self.client_addrs.push(cidr);
        self
    }

    /// Creates the namespaces and writes the files, without starting knockd
    /// (see [`Server::try_restart`]).
    pub fn prepare(self) -> Server {
        let mut s = self.build();
        s.write_conf_only();
        s
    }

    /// Creates the namespaces and starts knockd.
    pub fn start(self) -> Server {
        let mut s = self.build();
        s.write_conf_only();
        s.spawn();
        s
    }

    fn build(self) -> Server {
        let pair = Pair::new().expect("namespaces");
        let dir = tempfile::tempdir().expect("tempdir");
        if let Some((sub, _)) = self.mount {
            fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        for (name, content, mode) in &self.files {
            let p = dir.path().join(name);
            fs::write(&p, content).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).unwrap();
        }
        for cidr in &self.client_addrs {
            pair.client
                .run(&["ip", "addr", "add", cidr, "dev", knock_testnet::CLIENT_IF])
                .unwrap();
        }
        if self.drop_22 {
            for ipt in ["iptables", "ip6tables"] {
                pair.server
                    .run(&[
                        ipt, "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "DROP",
                    ])
                    .unwrap();
            }
        }
        pair.server.tcp_listen(22).unwrap();
        if let Some(f) = self.before_start {
            f(&pair);
        }
        Server {
            pair,
            dir,
            child: None,
            mount: self.mount.map(|(sub, ro)| (sub.to_owned(), ro)),
            conf: self.conf.to_owned(),
            state: self.state.unwrap_or("").to_owned(),
            args: self.args.iter().map(|a| a.to_string()).collect(),
            env: (self.env.iter())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            wrap: self.wrap.iter().map(|a| a.to_string()).collect(),
            verbose: !self.quiet,
            events: self.events,
            profile: self.profile,
        }
    }
}

/// A running knockd in its namespace pair; killed and cleaned up on drop.
pub struct Server {
    /// The namespaces.
    pub pair: Pair,
    /// knockd.conf, the log, the events and the state live here.
    pub dir: tempfile::TempDir,
    /// The daemon (taken when a test stops it itself).
    pub child: Option<Child>,
    /// A subdirectory bind-mounted in the daemon's own mount namespace, and
    /// whether it starts read-only ([`Setup::bind_mount`]).
    mount: Option<(String, bool)>,
    /// The knockd.conf text given to [`Setup::new`].
    conf: String,
    /// The state directory, relative to the temp dir.
    state: String,
    /// [`Setup::args`].
    args: Vec<String>,
    /// [`Setup::env`], `{DIR}` not yet replaced.
    env: Vec<(String, String)>,
    /// [`Setup::wrap`].
    wrap: Vec<String>,
    /// Whether knockd runs with `-v` (not [`Setup::quiet`]).
    verbose: bool,
    /// Whether knockd runs with `--events-json` (not [`Setup::no_events`]).
    events: bool,
    /// [`Setup::profile`].
    profile: Profile,
}

impl Server {
    /// `Setup::new(conf).start()`.
    pub fn start(conf: &str) -> Server {
        Setup::new(conf).start()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// A file in the temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_conf_only(&mut self) {
        let conf = self.conf.clone();
        self.write_conf(&conf);
    }

    /// Rewrites knockd.conf (`{DIR}` is the temp dir).
    pub fn write_conf(&self, conf: &str) {
        let dir = self.dir.path().display().to_string();
        fs::write(self.path("knockd.conf"), conf.replace("{DIR}", &dir)).unwrap();
    }

    /// Starts knockd (verbose, events as JSON lines in `events.json`) and
    /// waits until it listens.
    pub fn spawn(&mut self) {
        self.launch(&[], false);
    }

    /// Starts knockd like [`Server::spawn`] without waiting for it to start
    /// up (or fail): for a test that waits for a sign of its own, such as
    /// `READY=1` or the exit ([`Server::wait_exit`]).
    pub fn spawn_unwaited(&mut self) {
        assert!(self.child.is_none(), "spawn: the daemon still runs");
        self.child = Some(self.launch_unwaited(&[], false));
    }

    /// Starts knockd again after a test stopped it (see [`Server::kill`] and
    /// [`Server::stop`]): the same temp dir, so the same knockd.conf, log and
    /// `--state-dir`, with `extra` arguments after the usual ones.
    /// `events.json` and `stderr.log` are appended to, not truncated, so
    /// [`Server::log`] shows both runs. Waits until the new daemon listens.
    /// (`--state-dir` is always the temp dir; knockd rejects it given twice.)
    pub fn restart(&mut self, extra: &[&str]) {
        assert!(self.child.is_none(), "restart: the daemon still runs");
        self.launch(extra, true);
    }

    fn launch(&mut self, extra: &[&str], append: bool) {
        if let Some(status) = self.try_launch(extra, append) {
            panic!("knockd exited at start ({status}):\n{}", self.log());
        }
    }

    /// Starts knockd like [`Server::restart`] (or the first time, if no
    /// daemon ran yet), but a daemon that exits at start is not a failure:
    /// its exit status is returned (`None`: it runs).
    pub fn try_restart(&mut self, extra: &[&str]) -> Option<std::process::ExitStatus> {
        assert!(self.child.is_none(), "restart: the daemon still runs");
        self.try_launch(extra, true)
    }

    /// Spawns knockd with the usual arguments, [`Setup::args`] and `extra`,
    /// stdout to `events.json` and stderr to `stderr.log` (appended to with
    /// `append`, else truncated).
    fn launch_unwaited(&self, extra: &[&str], append: bool) -> Child {
        let open = |name: &str| {
            fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(append)
                .truncate(!append)
                .open(self.path(name))
                .unwrap()
        };
        let out = open("events.json");
        let err = open("stderr.log");
        let knockd = knock_testnet::example_bin("knockd", self.profile).expect("build example");
        // The command line up to knockd's own arguments.
        let mut argv: Vec<OsString> = self.wrap.iter().map(OsString::from).collect();
        if self.mount.is_some() {
            // A private mount namespace of the daemon's own: bind the
            // directory over itself (read-only if asked), then exec.
            argv.extend(
                [
                    "unshare",
                    "-m",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    "mount --bind \"$D\" \"$D\" && \
                     { [ -z \"$RO\" ] || mount -o remount,bind,ro \"$D\"; } && exec \"$@\"",
                    "sh",
                ]
                .map(OsString::from),
            );
        }
        argv.push(knockd.into_os_string());
        let mut cmd = self.pair.server.command(argv[0].to_str().unwrap());
        cmd.args(&argv[1..]);
        if let Some((sub, ro)) = &self.mount {
            cmd.env("D", self.path(sub))
                .env("RO", if *ro { "1" } else { "" });
        }
        let dir = self.dir.path().display().to_string();
        for (key, value) in &self.env {
            cmd.env(key, value.replace("{DIR}", &dir));
        }
        cmd.args([
            "-c",
            self.path("knockd.conf").to_str().unwrap(),
            "-i",
            "kn0",
        ])
        .args(self.verbose.then_some("-v"))
        .args(self.events.then_some("--events-json"))
        .args(["-g", self.path("knockd.log").to_str().unwrap()])
        .args(["--state-dir", self.path(&self.state).to_str().unwrap()])
        .args(&self.args)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap()
    }

    fn try_launch(&mut self, extra: &[&str], append: bool) -> Option<std::process::ExitStatus> {
        // Where this run's stderr begins: "starting up" must be this run's.
        let from = if append {
            fs::metadata(self.path("stderr.log")).map_or(0, |m| m.len())
        } else {
            0
        };
        // Without -v, "starting up" is in the log file only: its tail, then.
        let log_from = fs::metadata(self.path("knockd.log")).map_or(0, |m| m.len());
        let mut child = self.launch_unwaited(extra, append);
        let tail = |name: &str, from: u64| {
            let all = fs::read(self.path(name)).unwrap_or_default();
            let from = usize::try_from(from).unwrap().min(all.len());
            String::from_utf8_lossy(&all[from..]).into_owned()
        };
        let mut exited = None;
        wait_for("knockd to start or exit", Duration::from_secs(20), || {
            exited = child.try_wait().unwrap();
            exited.is_some()
                || match (append, self.verbose) {
                    (false, _) => self.log().contains("starting up"),
                    (true, true) => tail("stderr.log", from).contains("starting up"),
                    (true, false) => tail("knockd.log", log_from).contains("starting up"),
                }
        });
        if exited.is_none() {
            self.child = Some(child);
            std::thread::sleep(Duration::from_millis(300));
        }
        exited
    }

    /// Makes the [`Setup::bind_mount`] directory read-only in the running
    /// daemon's mount namespace (a filesystem that fails under it).
    pub fn remount_read_only(&self) {
        let (sub, _) = self.mount.as_ref().expect("Setup::bind_mount");
        let pid = self.child.as_ref().expect("running").id().to_string();
        let dir = self.path(sub);
        knock_testnet::run(&[
            "nsenter",
            "-t",
            &pid,
            "-m",
            "mount",
            "-o",
            "remount,bind,ro",
            dir.to_str().unwrap(),
        ])
        .unwrap();
    }

    /// Sends `sig` (e.g. `-HUP`) to the daemon.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        knock_testnet::run(&["kill", sig, &pid]).unwrap();
    }

    /// Stops the daemon with SIGTERM and waits for it to exit (at most 2 s).
    pub fn stop(&mut self) {
        self.signal("-TERM");
        self.wait_exit("exit", Duration::from_secs(2));
    }

    /// Kills the daemon with SIGKILL (no clean-up of its own) and waits for
    /// it to be gone (at most 2 s).
    pub fn kill(&mut self) {
        self.signal("-KILL");
        self.wait_exit("exit after SIGKILL", Duration::from_secs(2));
    }

    /// Waits at most `timeout` for the daemon to exit (a failure naming
    /// `what` after that, and the daemon is killed on drop); its exit status.
    pub fn wait_exit(&mut self, what: &str, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let mut status = None;
        wait_for(what, timeout, || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        self.child = None;
        status.unwrap()
    }

    /// The whole HTTP/1.1 response to `GET path` from `addr` (the metrics
    /// endpoint, say), asked from inside the server namespace.
    pub fn http_get(&self, addr: &str, path: &str) -> String {
        self.pair
            .server
            .enter(|| {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                write!(
                    s,
                    "GET {path} HTTP/1.1\r\nHost: knockd\r\nAccept: */*\r\n\r\n"
                )
                .unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).unwrap();
                out
            })
            .unwrap()
    }

    /// `knockd --check` on the server's knockd.conf, in its namespace.
    pub fn check(&self) -> std::process::Output {
        self.pair
            .server
            .output(&[
                example_bin("knockd").to_str().unwrap(),
                "--check",
                "-c",
                self.path("knockd.conf").to_str().unwrap(),
            ])
            .unwrap()
    }

    /// `iptables -S <chain>` in the server namespace.
    pub fn iptables_s(&self, chain: &str) -> String {
        self.pair.server.run(&["iptables", "-S", chain]).unwrap()
    }

    /// The knockd log and stderr.
    pub fn log(&self) -> String {
        fs::read_to_string(self.path("knockd.log")).unwrap_or_default()
            + &fs::read_to_string(self.path("stderr.log")).unwrap_or_default()
    }

    /// knockd's stderr so far (`stderr.log`).
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.path("stderr.log")).unwrap_or_default()
    }

    /// The `--events-json` lines so far.
    pub fn events(&self) -> String {
        self.stdout()
    }

    /// knockd's stdout so far (in `events.json`): the `--events-json`
    /// lines, and the `--stats-json` line once a daemon run with it exits.
    pub fn stdout(&self) -> String {
        fs::read_to_string(self.path("events.json")).unwrap_or_default()
    }

    /// Knocks with Debian's `knock` client from the client namespace.
    pub fn knock(&self, target: &str, ports: &[&str]) {
        let mut args = vec!["knock", "-d", "100", target];
        args.extend_from_slice(ports);
        self.pair.client.run(&args).unwrap();
    }

    /// Whether a TCP connect from the client's main address to `addr`:22 succeeds.
    pub fn connects(&self, addr: &str) -> bool {
        self.pair.client.tcp_connect(
            addr.parse::<IpAddr>().unwrap(),
            22,
            Duration::from_millis(700),
        )
    }

    /// Whether a TCP connect from the client's main address to `addr`:22
    /// completes within `timeout` (short timeouts suit polling: the veth
    /// pair answers in well under a millisecond when tcp/22 is open, and a
    /// dropped SYN is not retried within a second).
    pub fn connects_within(&self, addr: &str, timeout: Duration) -> bool {
        self.pair
            .client
            .tcp_connect(addr.parse::<IpAddr>().unwrap(), 22, timeout)
    }

    /// Removes the `iptables -I INPUT -s SRC -p tcp --dport 22 -j ACCEPT`
    /// rule the test doors' commands add, so that the next open can be seen.
    pub fn revoke_ssh(&self, src: &str) {
        self.pair
            .server
            .run(&[
                "iptables", "-D", "INPUT", "-s", src, "-p", "tcp", "--dport", "22", "-j", "ACCEPT",
            ])
            .unwrap();
    }

    /// Waits at most `timeout` until the [`touch_door`] opened for the
    /// client's main address; a failure names `what` and shows the log.
    pub fn wait_opened(&self, what: &str, timeout: Duration) {
        let opened = self.path(&format!("opened-{}", knock_testnet::CLIENT_V4));
        wait_for(&format!("{what}\n{}", self.log()), timeout, || {
            opened.exists()
        });
    }

    /// Waits until tcp/22 at `addr` accepts the client.
    pub fn wait_open(&self, addr: &str) {
        wait_for(
            &format!("tcp/22 open to {addr}\n{}", self.log()),
            Duration::from_secs(5),
            || self.connects(addr),
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
