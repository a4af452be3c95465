//! `knock`: the port-knocking client, command-line compatible with knockd's.
//!
//! ```text
//! knock [-u] [-d delay_ms] [-4|-6] [-v] [-V] host port[:proto]...
//! knock [-d delay_ms] [-4|-6] [-v] host --sequence-file FILE --line N
//! ```
//!
//! * A TCP knock is one SYN: a non-blocking `connect` that is closed at
//!   once. A UDP knock is one 1-byte datagram. As in knock, `-u` makes every
//!   knock UDP, even one written `port:tcp`. Unlike knock (which knocks TCP
//!   for anything but exactly `udp`), the protocol is case-insensitive, as
//!   in knockd.conf, and anything but tcp or udp is a usage error.
//! * `-d MS` waits between knocks; `--jitter MAX` adds a random 0..=MAX ms
//!   (from the OS's random source) to every wait.
//! * `--sequence-file FILE --line N` knocks the sequence written on line `N`
//!   (1-based) of a knockd sequence file (`sequence = /path` or
//!   `one_time_sequences = /path`), the workflow of the well-known guide's
//!   client script. A line that is missing, blank, already used (`#`) or
//!   does not parse is an error naming the file and the line.
//!
//! Exit status: 0 every knock was sent; 1 an error (unresolvable host, bad
//! sequence file line, socket error); 2 a usage error.
//!
//! ```text
//! cargo run --example knock -- -v 198.18.0.1 7000 8000:udp 9000
//! cargo run --example knock -- 198.18.0.1 --sequence-file /etc/knockd_seq --line 3
//! ```

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use knock_config::{parse_step, SequenceFile, MAX_SEQUENCE_FILE_SIZE};
use knock_core::{Proto, Step};
use socket2::{Domain, Protocol, Socket, Type};

/// Sends a port-knock sequence to a host.
#[derive(Debug, Parser)]
#[command(name = "knock", version)]
struct Args {
    /// Make every knock UDP, whatever its `:proto` (default TCP).
    #[arg(short = 'u', long = "udp")]
    udp: bool,

    /// Wait this many milliseconds between knocks.
    #[arg(short = 'd', long = "delay", value_name = "MS", default_value_t = 0)]
    delay: u64,

    /// Add a random wait of 0 to MAX milliseconds between knocks.
    #[arg(long, value_name = "MAX", default_value_t = 0)]
    jitter: u64,

    /// Use IPv4 only.
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    ipv4: bool,

    /// Use IPv6 only.
    #[arg(short = '6', long = "ipv6")]
    ipv6: bool,

    /// Print every knock.
    #[arg(short, long)]
    verbose: bool,

    /// Knock the sequence written in this knockd sequence file (with --line).
    #[arg(long, value_name = "FILE", requires = "line", conflicts_with = "ports")]
    sequence_file: Option<PathBuf>,

    /// The 1-based line of --sequence-file to knock.
    #[arg(long, value_name = "N", requires = "sequence_file")]
    line: Option<usize>,

    // Room for the derived-sequence client: `--secret-file F --door NAME`
    // would be a third way to obtain the steps (see `Args::sequence`).
    /// The host to knock (name or address).
    host: String,

    /// The knocks: `port[:tcp|udp]`.
    #[arg(value_name = "PORT[:PROTO]", value_parser = parse_port_arg,
          required_unless_present = "sequence_file")]
    ports: Vec<PortArg>,
}

/// One `port[:proto]` argument; `proto` is `None` when not written (then
/// `-u` decides).
#[derive(Clone, Copy, Debug)]
struct PortArg {
    port: u16,
    proto: Option<Proto>,
}

/// Parses `port[:proto]` with knock-config's step parser, so the client
/// accepts exactly what a knockd.conf `sequence` accepts.
fn parse_port_arg(text: &str) -> Result<PortArg, String> {
    let step = parse_step(text).map_err(|e| e.to_string())?;
    Ok(PortArg {
        port: step.port,
        proto: text.contains(':').then_some(step.proto),
    })
}

impl Args {
    /// The steps to knock, from the command line or the sequence file.
    fn sequence(&self) -> Result<Vec<Step>> {
        if let (Some(file), Some(line)) = (&self.sequence_file, self.line) {
            return sequence_from_file(file, line);
        }
        Ok(self
            .ports
            .iter()
            .map(|p| Step {
                // knock's -u: *every* knock is UDP, even one written `:tcp`.
                proto: if self.udp {
                    Proto::Udp
                } else {
                    p.proto.unwrap_or(Proto::Tcp)
                },
                port: p.port,
            })
            .collect())
    }
}

/// The sequence on 1-based line `line` of a knockd sequence file.
fn sequence_from_file(path: &Path, line: usize) -> Result<Vec<Step>> {
    let shown = path.display();
    let size = std::fs::metadata(path)
        .with_context(|| format!("{shown}: cannot read sequence file"))?
        .len();
    if size > MAX_SEQUENCE_FILE_SIZE {
        bail!("{shown}: {size} bytes is too large for a sequence file");
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{shown}: cannot read sequence file"))?;
    let count = text.lines().count();
    let Some(wanted) = line.checked_sub(1).and_then(|i| text.lines().nth(i)) else {
        bail!("{shown}:{line}: no such line (lines are numbered from 1; the file has {count})");
    };
    let trimmed = wanted.trim();
    if trimmed.is_empty() {
        bail!("{shown}:{line}: the line is blank, there is no sequence on it");
    }
    if trimmed.starts_with('#') {
        bail!("{shown}:{line}: the sequence on this line was already used (it starts with #)");
    }
    // Parse the one line with knock-config's sequence-file parser; the blank
    // lines in front keep its error messages pointing at the real line.
    let padded = format!("{}{wanted}\n", "\n".repeat(line - 1));
    let file = SequenceFile::parse(&padded, path)?;
    match file.entries() {
        [entry] => Ok(entry.steps.clone()),
        _ => bail!("{shown}:{line}: no sequence on this line"),
    }
}

/// Resolves `host` to one address of the wanted family.
fn resolve(host: &str, v4: bool, v6: bool) -> Result<IpAddr> {
    let addrs = (host, 0)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve host {host:?}"))?;
    let mut addrs = addrs.map(|a| a.ip()).filter(|ip| match ip {
        IpAddr::V4(_) => !v6,
        IpAddr::V6(_) => !v4,
    });
    let family = match (v4, v6) {
        (true, _) => " to an IPv4 address",
        (_, true) => " to an IPv6 address",
        _ => "",
    };
    addrs
        .next()
        .with_context(|| format!("cannot resolve host {host:?}{family}"))
}

/// Sends one knock: a SYN (non-blocking connect, then close) or a datagram.
fn knock(to: SocketAddr, proto: Proto) -> Result<()> {
    let domain = Domain::for_address(to);
    match proto {
        Proto::Tcp => {
            let sock = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
            sock.set_nonblocking(true)?;
            match sock.connect(&to.into()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e).with_context(|| format!("tcp knock on {to}")),
            }
            // Dropping the socket closes it: the SYN has left already.
        }
        Proto::Udp => {
            let sock = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
            sock.send_to(&[0], &to.into())
                .with_context(|| format!("udp knock on {to}"))?;
        }
    }
    Ok(())
}

/// A random number of milliseconds in 0..=max, from the OS's random source.
fn jitter(max: u64) -> Result<u64> {
    if max == 0 {
        return Ok(0);
    }
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| anyhow!("reading the system's random source: {e}"))?;
    Ok(u64::from_le_bytes(bytes) % (max.saturating_add(1)).max(1))
}

fn run(args: &Args) -> Result<()> {
    let steps = args.sequence()?;
    let ip = resolve(&args.host, args.ipv4, args.ipv6)?;
    for (i, step) in steps.iter().enumerate() {
        if i > 0 {
            let wait = args.delay.saturating_add(jitter(args.jitter)?);
            if args.verbose && args.jitter > 0 {
                println!("waiting {wait} ms");
            }
            std::thread::sleep(Duration::from_millis(wait));
        }
        let to = SocketAddr::new(ip, step.port);
        if args.verbose {
            // knockd's client's wording.
            println!("hitting {} {}:{}", step.proto, ip, step.port);
        }
        knock(to, step.proto)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse(); // usage errors exit with 2, --help/--version with 0
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("knock: error: {}", knock::error_line(&*e));
            ExitCode::from(1)
        }
    }
}
