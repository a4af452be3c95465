//! `knock`: the port-knocking client, command-line compatible with knockd's.
//!
//! ```text
//! knock [-u] [-d delay_ms] [-4|-6] [-v] [-V] host port[:proto]...
//! knock [-d delay_ms] [-4|-6] [-v] host --sequence-file FILE --line N
//! knock [-d delay_ms] [-4|-6] [-v] host --secret-file FILE --door NAME
//!       [-c knockd.conf|knock.toml] [--length N] [--period SECS]
//!       [--ports LO-HI] [--protocols tcp,udp] [--time UNIX] [--print]
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
//! * `--secret-file FILE --door NAME` knocks the time-derived sequence of
//!   the current window (`sequence_secret_file` doors; see
//!   `knock_config::derive`). The derivation needs the door's
//!   `sequence_length`, `sequence_period`, `sequence_ports` and
//!   `sequence_protocols`: give them with `--length`, `--period`, `--ports`
//!   and `--protocols` (defaults: knock-rs's defaults, 3, 30 s,
//!   1024-65535, tcp), or read them from a copy of the server's
//!   configuration with `-c FILE` (a `.toml` file is read as TOML, anything
//!   else as knockd.conf; flags given as well win; the secret file named
//!   there is used when `--secret-file` is not given). The secret file must
//!   not be readable by everyone. `--time UNIX` derives for another time
//!   (clock skew, tests); `--print` prints the sequence (`port:proto ...`)
//!   instead of knocking.
//!
//! * `--spa` sends one Single Packet Authorization packet instead, the
//!   one Debian's `fwknop` client sends (fwknop 2.6, Rijndael with
//!   HMAC-SHA256), with fwknop's option names: `--key-base64-rijndael KEY`
//!   (or `--key-rijndael PASSPHRASE`), `--key-base64-hmac KEY`, `-A
//!   tcp/22[,udp/1194]`, `-a ADDRESS` (the address to open for: this
//!   host's, or another) or `-s` (the packet's source), `-U USER` (default
//!   `$USER`), `-f SECS` (the client timeout), `-p PORT` (default 62201),
//!   `-D HOST` (or the host argument). Either side can be replaced by
//!   fwknop's: our knockd reads fwknopd's access.conf, fwknopd accepts
//!   these packets.
//!
//! Exit status: 0 every knock was sent; 1 an error (unresolvable host, bad
//! sequence file line, socket error); 2 a usage error.
//!
//! ```text
//! cargo run --example knock -- -v 198.18.0.1 7000 8000:udp 9000
//! cargo run --example knock -- 198.18.0.1 --sequence-file /etc/knockd_seq --line 3
//! cargo run --example knock -- 198.18.0.1 --secret-file ~/.knock/ssh.key --door openSSH -c knockd.conf
//! cargo run --example knock -- --spa --key-base64-rijndael K --key-base64-hmac H -A tcp/22 -a 198.18.0.2 198.18.0.1
//! ```

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use knock_config::derive::{self, Secret};
use knock_config::{
    parse_step, read_regular_file, Config, DerivedSequence, SequenceFile, MAX_CONFIG_FILE_SIZE,
    MAX_SEQUENCE_FILE_SIZE,
};
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

    /// Knock the time-derived sequence of door --door with this secret.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["ports", "sequence_file"])]
    secret_file: Option<PathBuf>,

    /// The door whose derived sequence to knock (its section name).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["ports", "sequence_file"])]
    door: Option<String>,

    /// Read the door's sequence_* settings from this knockd.conf (or .toml).
    #[arg(short = 'c', long = "config", value_name = "FILE", requires = "door")]
    config: Option<PathBuf>,

    /// Steps of the derived sequence (sequence_length).
    #[arg(long, value_name = "N", requires = "door")]
    length: Option<usize>,

    /// Seconds one derived sequence lives (sequence_period).
    #[arg(long, value_name = "SECS", requires = "door")]
    period: Option<u64>,

    /// The derived ports' range, `LO-HI` (sequence_ports).
    #[arg(long = "ports", value_name = "LO-HI", requires = "door")]
    port_range: Option<String>,

    /// Protocols of derived steps, `tcp`, `udp` or `tcp,udp` (sequence_protocols).
    #[arg(long, value_name = "LIST", requires = "door")]
    protocols: Option<String>,

    /// Derive for this Unix time (seconds) instead of now.
    #[arg(long = "time", value_name = "UNIX", requires = "door")]
    at: Option<f64>,

    /// Print the derived sequence instead of knocking.
    #[arg(long, requires = "door")]
    print: bool,

    /// Send a Single Packet Authorization packet (fwknop's) instead of knocks.
    #[arg(long, conflicts_with_all = ["ports", "sequence_file", "door", "udp"])]
    spa: bool,

    /// SPA: the encryption key in base64 (fwknop's KEY_BASE64).
    #[arg(long = "key-base64-rijndael", value_name = "KEY", requires = "spa")]
    key_base64_rijndael: Option<String>,

    /// SPA: the encryption key as a passphrase (fwknop's KEY).
    #[arg(
        long = "key-rijndael",
        value_name = "PASSPHRASE",
        requires = "spa",
        conflicts_with = "key_base64_rijndael"
    )]
    key_rijndael: Option<String>,

    /// SPA: the HMAC key in base64 (fwknop's HMAC_KEY_BASE64).
    #[arg(long = "key-base64-hmac", value_name = "KEY", requires = "spa")]
    key_base64_hmac: Option<String>,

    /// SPA: fwknop's --use-hmac (always on: accepted for compatibility).
    #[arg(long = "use-hmac", requires = "spa")]
    use_hmac: bool,

    /// SPA: the ports to open, `tcp/22[,udp/1194]`.
    #[arg(short = 'A', long = "access", value_name = "LIST", requires = "spa")]
    access: Option<String>,

    /// SPA: the address to open for (this host's, or another).
    #[arg(
        short = 'a',
        long = "allow-ip",
        value_name = "ADDRESS",
        requires = "spa",
        conflicts_with = "source_ip"
    )]
    allow_ip: Option<IpAddr>,

    /// SPA: open for the packet's source address (0.0.0.0).
    #[arg(short = 's', long = "source-ip", requires = "spa")]
    source_ip: bool,

    /// SPA: the user name in the packet (default $USER).
    #[arg(
        short = 'U',
        long = "spoof-user",
        value_name = "USER",
        requires = "spa"
    )]
    user: Option<String>,

    /// SPA: ask for this firewall timeout (seconds).
    #[arg(
        short = 'f',
        long = "fw-timeout",
        value_name = "SECS",
        requires = "spa"
    )]
    fw_timeout: Option<u32>,

    /// SPA: the server's UDP port.
    #[arg(short = 'p', long = "server-port", value_name = "PORT", default_value_t = knock_spa::DEFAULT_PORT)]
    server_port: u16,

    /// SPA: the server (fwknop's -D; or the host argument).
    #[arg(
        short = 'D',
        long = "destination",
        value_name = "HOST",
        conflicts_with = "host"
    )]
    destination: Option<String>,

    /// The host to knock (name or address).
    #[arg(required_unless_present = "destination")]
    host: Option<String>,

    /// The knocks: `port[:tcp|udp]`.
    #[arg(value_name = "PORT[:PROTO]", value_parser = parse_port_arg,
          required_unless_present_any = ["sequence_file", "door", "spa"])]
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
        if let Some(door) = &self.door {
            return self.derived_sequence(door);
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

impl Args {
    /// The derived sequence of `door` for now (or `--time`).
    fn derived_sequence(&self, door: &str) -> Result<Vec<Step>> {
        let mut spec = match &self.config {
            Some(path) => {
                let bytes = read_regular_file(path, MAX_CONFIG_FILE_SIZE)
                    .with_context(|| format!("{}: cannot read configuration", path.display()))?;
                let text = String::from_utf8(bytes)
                    .with_context(|| format!("{}: not UTF-8 text", path.display()))?;
                // Parse only: the server's secret path may not exist here.
                let config = if path.extension().is_some_and(|e| e == "toml") {
                    Config::parse_toml_str(&text, path)?
                } else {
                    Config::parse_knockd_str(&text, path)?
                };
                let d = config
                    .door(door)
                    .with_context(|| format!("{}: no door [{door}]", path.display()))?;
                d.derived()
                    .with_context(|| {
                        format!(
                            "{}: door [{door}] has no sequence_secret_file",
                            path.display()
                        )
                    })?
                    .clone()
            }
            None => DerivedSequence::new(self.secret_file.clone().unwrap_or_default()),
        };
        if let Some(f) = &self.secret_file {
            spec.secret_file = f.clone();
        }
        if spec.secret_file.as_os_str().is_empty() {
            bail!("--door needs --secret-file (or -c with the door's sequence_secret_file)");
        }
        if let Some(n) = self.length {
            spec.length = n;
        }
        if let Some(p) = self.period {
            if p == 0 {
                bail!("--period must be above 0");
            }
            spec.period = Duration::from_secs(p);
        }
        if let Some(r) = &self.port_range {
            let (lo, hi) = r
                .split_once('-')
                .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)))
                .filter(|&(lo, hi): &(u16, u16)| lo >= 1 && lo <= hi)
                .with_context(|| format!("--ports {r:?}: expected LO-HI, e.g. 20000-60000"))?;
            spec.ports = lo..=hi;
        }
        if let Some(p) = &self.protocols {
            spec.protocols = p
                .split(',')
                .map(|x| x.trim().parse::<Proto>())
                .collect::<Result<_, _>>()
                .with_context(|| format!("--protocols {p:?}"))?;
        }
        let secret = Secret::load(&spec.secret_file)
            .with_context(|| format!("secret file {}", spec.secret_file.display()))?;
        let unix = match self.at {
            Some(t) if t.is_finite() && t >= 0.0 => Duration::from_secs_f64(t),
            Some(t) => bail!("--time {t}: expected seconds since 1970"),
            None => derive::unix_now(),
        };
        let w = derive::window_of(unix, spec.period);
        derive::derive(&secret, door, &spec, w).with_context(|| {
            format!(
                "door [{door}]: cannot derive {} distinct ports from {}-{}",
                spec.length,
                spec.ports.start(),
                spec.ports.end()
            )
        })
    }
}

/// The sequence on 1-based line `line` of a knockd sequence file.
fn sequence_from_file(path: &Path, line: usize) -> Result<Vec<Step>> {
    let shown = path.display();
    let bytes = read_regular_file(path, MAX_SEQUENCE_FILE_SIZE)
        .with_context(|| format!("{shown}: cannot read sequence file"))?;
    let text = String::from_utf8(bytes).with_context(|| format!("{shown}: not UTF-8 text"))?;
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

/// Builds and sends the SPA packet (`--spa`).
fn send_spa(args: &Args, ip: IpAddr) -> Result<()> {
    use knock_spa::{seal, Access, Keys, Message};
    let enc = match (&args.key_base64_rijndael, &args.key_rijndael) {
        (Some(b64), _) => Keys::decode_base64(b64)
            .context("--key-base64-rijndael")?
            .to_vec(),
        (None, Some(pass)) => pass.as_bytes().to_vec(),
        (None, None) => bail!("--spa needs --key-base64-rijndael (or --key-rijndael)"),
    };
    let hmac = match &args.key_base64_hmac {
        Some(b64) => Keys::decode_base64(b64).context("--key-base64-hmac")?,
        None => bail!("--spa needs --key-base64-hmac (fwknop's HMAC_KEY_BASE64)"),
    };
    let keys = Keys::new(&enc, &hmac)?;
    let access = args
        .access
        .as_deref()
        .context("--spa needs -A proto/port, e.g. -A tcp/22")?;
    let ports = access
        .split(',')
        .map(|p| knock_config::parse_open(p).map_err(|e| anyhow!("-A {p:?}: {e}")))
        .collect::<Result<Vec<Step>>>()?;
    let addr = match (args.allow_ip, args.source_ip) {
        (Some(a), _) => Some(a),
        (None, true) => None,
        (None, false) => bail!("--spa needs -a ADDRESS (the address to open for) or -s"),
    };
    let user = args
        .user
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .unwrap_or_else(|| "root".to_owned());
    let mut random = [0u8; 16];
    getrandom::getrandom(&mut random)
        .map_err(|e| anyhow!("reading the system's random source: {e}"))?;
    let (salt, rand) = random.split_at(8);
    let mut salt8 = [0u8; 8];
    salt8.copy_from_slice(salt);
    let mut rand8 = [0u8; 8];
    rand8.copy_from_slice(rand);
    let now = derive::unix_now().as_secs();
    let mut msg = Message::access(
        &user,
        now,
        Access { addr, ports },
        u64::from_le_bytes(rand8),
    );
    if let Some(t) = args.fw_timeout {
        msg = msg.with_client_timeout(t);
    }
    let packet = seal(&keys, msg.plaintext().as_bytes(), salt8);
    let to = SocketAddr::new(ip, args.server_port);
    if args.verbose {
        println!(
            "SPA packet ({} bytes) to udp {to}: {}",
            packet.len(),
            msg.encode()
        );
    }
    let sock = Socket::new(Domain::for_address(to), Type::DGRAM, Some(Protocol::UDP))?;
    sock.send_to(packet.as_bytes(), &to.into())
        .with_context(|| format!("SPA packet to {to}"))?;
    Ok(())
}

fn run(args: &Args) -> Result<()> {
    let host = args
        .host
        .as_deref()
        .or(args.destination.as_deref())
        .context("no host given")?;
    if args.spa {
        let ip = resolve(host, args.ipv4, args.ipv6)?;
        return send_spa(args, ip);
    }
    let steps = args.sequence()?;
    if args.print {
        let text: Vec<String> = steps.iter().map(|s| s.to_string()).collect();
        println!("{}", text.join(" "));
        return Ok(());
    }
    let ip = resolve(host, args.ipv4, args.ipv6)?;
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

pub(crate) fn main() -> ExitCode {
    let args = Args::parse(); // usage errors exit with 2, --help/--version with 0
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("knock: error: {}", knock::error_line(&*e));
            ExitCode::from(1)
        }
    }
}
