//! Test support for knock-rs: network namespaces that a test creates and
//! destroys, joined by a veth pair, with addresses from 198.18.0.0/15 and the
//! IPv6 documentation prefix. Needs root; every helper returns an error
//! rather than panicking, so a test can say what failed.
//!
//! ```no_run
//! let pair = knock_testnet::Pair::new().unwrap();
//! pair.client.run(&["ping", "-c1", "-W1", knock_testnet::SERVER_V4]).unwrap();
//! ```
#![deny(missing_docs)]

use std::fs::File;
use std::io;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The server's IPv4 address in a [`Pair`].
pub const SERVER_V4: &str = "198.18.0.1";
/// The client's IPv4 address in a [`Pair`].
pub const CLIENT_V4: &str = "198.18.0.2";
/// The server's IPv6 address in a [`Pair`].
pub const SERVER_V6: &str = "2001:db8::1";
/// The client's IPv6 address in a [`Pair`].
pub const CLIENT_V6: &str = "2001:db8::2";
/// The server side's interface name in a [`Pair`].
pub const SERVER_IF: &str = "kn0";
/// The client side's interface name in a [`Pair`].
pub const CLIENT_IF: &str = "kn1";

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn io_err(msg: String) -> io::Error {
    io::Error::other(msg)
}

/// Runs a command and fails with its stderr if it fails.
pub fn run(args: &[&str]) -> io::Result<String> {
    let (prog, rest) = args
        .split_first()
        .ok_or_else(|| io_err("empty command".into()))?;
    let out = Command::new(prog)
        .args(rest)
        .stdin(Stdio::null())
        .output()?;
    check(args, out)
}

fn check(args: &[&str], out: Output) -> io::Result<String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(io_err(format!(
            "`{}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Whether we run as root (tests that need namespaces check this first).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A network namespace, deleted (with every process still in it killed) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a fresh namespace named `knk-<tag>-<pid>-<n>` with loopback up.
    pub fn new(tag: &str) -> io::Result<Netns> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("knk-{tag}-{}-{n}", std::process::id());
        run(&["ip", "netns", "add", &name])?;
        let ns = Netns { name };
        ns.run(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs a command inside the namespace; its stdout, or an error with its stderr.
    pub fn run(&self, args: &[&str]) -> io::Result<String> {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        run(&full)
    }

    /// Runs a command inside the namespace and returns its raw output, whatever its status.
    pub fn output(&self, args: &[&str]) -> io::Result<Output> {
        let (prog, rest) = args
            .split_first()
            .ok_or_else(|| io_err("empty command".into()))?;
        self.command(prog).args(rest).stdin(Stdio::null()).output()
    }

    /// Runs `f` on a new thread that has entered the namespace, so sockets it
    /// opens live there.
    pub fn enter<F, R>(&self, f: F) -> io::Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let path = format!("/var/run/netns/{}", self.name);
        let file = File::open(&path)?;
        std::thread::scope(|s| {
            s.spawn(move || {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| io_err(format!("setns {path}: {e}")))?;
                Ok(f())
            })
            .join()
            .map_err(|_| io_err("namespace thread panicked".into()))?
        })
    }

    /// Whether a TCP connect from this namespace to `addr:port` succeeds within `timeout_s`.
    pub fn tcp_connects(&self, addr: &str, port: u16, timeout_s: u32) -> bool {
        let t = timeout_s.to_string();
        let p = port.to_string();
        self.output(&["nc", "-z", "-w", &t, addr, &p])
            .map(|o| o.status.success())
            .unwrap_or(false)
    }
}

impl Netns {
    /// Listens on TCP `port` (all addresses, IPv4 and IPv6) inside the
    /// namespace and accepts (and drops) connections on a background thread
    /// for the rest of the process. Returns the bound address.
    pub fn tcp_listen(&self, port: u16) -> io::Result<std::net::SocketAddr> {
        let listener = self.enter(move || {
            std::net::TcpListener::bind((std::net::Ipv6Addr::UNSPECIFIED, port))
        })??;
        let addr = listener.local_addr()?;
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                drop(conn);
            }
        });
        Ok(addr)
    }

    /// Listens on TCP `port` (all addresses, IPv4 and IPv6) inside the
    /// namespace and echoes back what each connection sends, each on its
    /// own thread, for the rest of the process.
    pub fn tcp_echo(&self, port: u16) -> io::Result<std::net::SocketAddr> {
        use std::io::{Read, Write};
        let listener = self.enter(move || {
            std::net::TcpListener::bind((std::net::Ipv6Addr::UNSPECIFIED, port))
        })??;
        let addr = listener.local_addr()?;
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 512];
                    while let Ok(n @ 1..) = conn.read(&mut buf) {
                        if conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Ok(addr)
    }

    /// A TCP connection from this namespace to `addr:port` (the socket
    /// stays in this namespace; use it from any thread).
    pub fn tcp_stream(
        &self,
        addr: std::net::IpAddr,
        port: u16,
        timeout: std::time::Duration,
    ) -> io::Result<std::net::TcpStream> {
        self.enter(move || {
            std::net::TcpStream::connect_timeout(&std::net::SocketAddr::new(addr, port), timeout)
        })?
    }

    /// Whether a TCP connect from this namespace to `addr:port` completes
    /// within `timeout` (a Rust connect, no `nc` process).
    pub fn tcp_connect(
        &self,
        addr: std::net::IpAddr,
        port: u16,
        timeout: std::time::Duration,
    ) -> bool {
        self.enter(move || {
            std::net::TcpStream::connect_timeout(&std::net::SocketAddr::new(addr, port), timeout)
                .is_ok()
        })
        .unwrap_or(false)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(pids) = run(&["ip", "netns", "pids", &self.name]) {
            for pid in pids.split_whitespace() {
                let _ = run(&["kill", "-9", pid]);
            }
        }
        let _ = run(&["ip", "netns", "del", &self.name]);
    }
}

/// Sends `msg` over `conn` (to a [`Netns::tcp_echo`] server) and whether
/// the same bytes come back within 2 s.
pub fn echoes(conn: &mut std::net::TcpStream, msg: &[u8]) -> bool {
    use std::io::{Read, Write};
    if conn
        .set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .is_err()
        || conn.write_all(msg).is_err()
    {
        return false;
    }
    let mut got = vec![0u8; msg.len()];
    conn.read_exact(&mut got).is_ok() && got == msg
}

/// Two namespaces joined by a veth pair: `server` (kn0, 198.18.0.1/24,
/// 2001:db8::1/64) and `client` (kn1, 198.18.0.2/24, 2001:db8::2/64).
#[derive(Debug)]
pub struct Pair {
    /// The server side.
    pub server: Netns,
    /// The client side.
    pub client: Netns,
}

impl Pair {
    /// Creates both namespaces and the link, with addresses up and IPv6 DAD off.
    pub fn new() -> io::Result<Pair> {
        let server = Netns::new("srv")?;
        let client = Netns::new("cli")?;
        server.run(&[
            "ip",
            "link",
            "add",
            SERVER_IF,
            "type",
            "veth",
            "peer",
            "name",
            CLIENT_IF,
            "netns",
            client.name(),
        ])?;
        for (ns, ifname, v4, v6) in [
            (&server, SERVER_IF, SERVER_V4, SERVER_V6),
            (&client, CLIENT_IF, CLIENT_V4, CLIENT_V6),
        ] {
            ns.run(&["ip", "addr", "add", &format!("{v4}/24"), "dev", ifname])?;
            ns.run(&[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                ifname,
                "nodad",
            ])?;
            ns.run(&["ip", "link", "set", ifname, "up"])?;
        }
        Ok(Pair { server, client })
    }

    /// Adds an 802.1Q VLAN `id` on both sides (`kn0.<id>`, `kn1.<id>`), with
    /// 198.19.<id>.1/24 and .2/24. Returns the server-side interface name.
    pub fn add_vlan(&self, id: u16) -> io::Result<String> {
        let sid = id.to_string();
        let mut server_if = String::new();
        for (ns, parent, host) in [(&self.server, SERVER_IF, 1), (&self.client, CLIENT_IF, 2)] {
            let name = format!("{parent}.{id}");
            ns.run(&[
                "ip", "link", "add", "link", parent, "name", &name, "type", "vlan", "id", &sid,
            ])?;
            ns.run(&[
                "ip",
                "addr",
                "add",
                &format!("198.19.{}.{host}/24", id % 256),
                "dev",
                &name,
            ])?;
            ns.run(&["ip", "link", "set", &name, "up"])?;
            if host == 1 {
                server_if = name;
            }
        }
        Ok(server_if)
    }
}

impl Netns {
    /// Sends raw link-layer frames out of `ifname` from inside the namespace
    /// (a python3 `AF_PACKET` socket), in order.
    pub fn send_frames(&self, ifname: &str, frames: &[Vec<u8>]) -> io::Result<()> {
        const SCRIPT: &str = "import socket,sys\n\
            s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\n\
            s.bind((sys.argv[1],0))\n\
            for h in sys.argv[2:]: s.send(bytes.fromhex(h))\n";
        let hex: Vec<String> = frames
            .iter()
            .map(|f| f.iter().map(|b| format!("{b:02x}")).collect())
            .collect();
        let mut args = vec!["python3", "-c", SCRIPT, ifname];
        args.extend(hex.iter().map(String::as_str));
        self.run(&args).map(drop)
    }

    /// Knocks like knockd's `knock` client, from inside the namespace: for
    /// each `(address, port, "tcp"|"udp")`, one SYN (non-blocking connect,
    /// then close) or one 1-byte UDP datagram, `gap_ms` apart. IPv6
    /// addresses are written without brackets.
    pub fn knock(&self, targets: &[(&str, u16, &str)], gap_ms: u32) -> io::Result<()> {
        const SCRIPT: &str = "import socket,sys,time\n\
            gap=int(sys.argv[1])/1000\n\
            for t in sys.argv[2:]:\n\
            \x20 a,p,k=t.rsplit(',',2)\n\
            \x20 f=socket.AF_INET6 if ':' in a else socket.AF_INET\n\
            \x20 if k=='udp':\n\
            \x20\x20 s=socket.socket(f,socket.SOCK_DGRAM); s.sendto(b'k',(a,int(p)))\n\
            \x20 else:\n\
            \x20\x20 s=socket.socket(f,socket.SOCK_STREAM); s.setblocking(False); s.connect_ex((a,int(p)))\n\
            \x20 s.close(); time.sleep(gap)\n";
        let gap = gap_ms.to_string();
        let specs: Vec<String> = targets
            .iter()
            .map(|(a, p, k)| format!("{a},{p},{k}"))
            .collect();
        let mut args = vec!["python3", "-c", SCRIPT, &gap];
        args.extend(specs.iter().map(String::as_str));
        self.run(&args).map(drop)
    }
}

/// Which build of an example [`example_bin`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// The profile of the running test binary (`target/<profile>/deps/...`).
    SameAsTest,
    /// `--release`, whatever the test's profile.
    Release,
}

/// The path of example `name` of the package under test, built (or brought
/// up to date) with `cargo build --example` once per test process: `cargo
/// test --test X` alone does not rebuild examples. Uses the `CARGO` and
/// `CARGO_MANIFEST_DIR` variables cargo sets for test binaries.
pub fn example_bin(name: &str, profile: Profile) -> io::Result<std::path::PathBuf> {
    use std::sync::Mutex;
    static BUILT: Mutex<Vec<(String, bool)>> = Mutex::new(Vec::new());
    // target/<profile>/deps/<test>-<hash> -> target/<profile>
    let exe = std::env::current_exe()?;
    let test_profile = exe
        .parent()
        .and_then(std::path::Path::parent)
        .ok_or_else(|| io_err(format!("unexpected test binary path {}", exe.display())))?;
    let target = test_profile
        .parent()
        .ok_or_else(|| io_err("no target directory".into()))?;
    let release = profile == Profile::Release || test_profile.ends_with("release");
    let dir = if release {
        target.join("release")
    } else {
        test_profile.to_owned()
    };
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|(n, r)| n == name && *r == release) {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
            .ok_or_else(|| io_err("CARGO_MANIFEST_DIR is not set (run under cargo test)".into()))?;
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "--example", name])
            .env("CARGO_TARGET_DIR", target)
            .current_dir(manifest);
        if release {
            cmd.arg("--release");
        }
        let st = cmd.status()?;
        if !st.success() {
            return Err(io_err(format!(
                "cargo build --example {name} failed ({st})"
            )));
        }
        built.push((name.to_owned(), release));
    }
    Ok(dir.join("examples").join(name))
}

/// Polls `f` every 50 ms until it is true; panics naming `what` after `timeout`.
pub fn wait_for(what: &str, timeout: std::time::Duration, mut f: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}
