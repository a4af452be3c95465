//! `floodgen`: writes a pcap for flood tests and benchmarks.
//!
//! N first knocks from N distinct spoofed sources (100.64.0.0/10, in order
//! from 100.64.0.1), each a TCP SYN to the door's first port, then the full
//! sequence from the real knocker. Ethernet frames, addressed to `--dst-mac`
//! (the server veth's MAC), so that `tcpreplay` on the client side of a veth
//! delivers them to the server's interface.
//!
//! With `--spa`, the N packets are instead UDP datagrams to the SPA port
//! (62201) from N spoofed sources, each carrying 204 bytes of base64 junk:
//! what passes every check before the HMAC, so each costs the daemon one
//! HMAC-SHA256 (no real knock follows).
//!
//! ```text
//! floodgen -n 200000 --dst-mac 02:11:22:33:44:55 -o flood.pcap
//! floodgen --spa -n 50000 --dst-mac 02:11:22:33:44:55 -o spa-junk.pcap
//! tcpreplay --topspeed -i kn1 flood.pcap
//! ```

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;
use knock::capture::craft;
use knock::core::TcpFlags;

/// Writes N spoofed first knocks and one real knock sequence as a pcap.
#[derive(Parser, Debug)]
#[command(name = "floodgen")]
struct Args {
    /// Number of spoofed sources (one first knock each).
    #[arg(short = 'n', long = "count", default_value_t = 200_000)]
    count: u32,
    /// The door's sequence (TCP ports); the flood knocks on the first one.
    #[arg(long = "sequence", value_delimiter = ',', default_values_t = [7000u16, 8000, 9000])]
    sequence: Vec<u16>,
    /// The server's address (destination of every knock).
    #[arg(long = "dst", default_value = "198.18.0.1")]
    dst: Ipv4Addr,
    /// The real knocker's address.
    #[arg(long = "src", default_value = "198.18.0.2")]
    src: Ipv4Addr,
    /// Destination MAC of every frame (the server interface's address).
    #[arg(long = "dst-mac", default_value = "ff:ff:ff:ff:ff:ff")]
    dst_mac: String,
    /// Source MAC of every frame.
    #[arg(long = "src-mac", default_value = "02:00:00:00:00:02")]
    src_mac: String,
    /// Skip the real knock sequence at the end (flood only).
    #[arg(long = "no-real")]
    no_real: bool,
    /// Junk SPA datagrams to udp/--spa-port instead of first knocks.
    #[arg(long = "spa")]
    spa: bool,
    /// The SPA port (with --spa).
    #[arg(long = "spa-port", default_value_t = 62201)]
    spa_port: u16,
    /// Output file.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
}

fn parse_mac(s: &str) -> anyhow::Result<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        bail!("bad MAC address {s:?}");
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16).with_context(|| format!("bad MAC address {s:?}"))?;
    }
    Ok(mac)
}

/// The n-th spoofed source: 100.64.0.0/10 counted from 100.64.0.1.
fn spoofed(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + 1 + n)
}

struct Pcap<W: Write> {
    out: W,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    n: u64,
}

impl<W: Write> Pcap<W> {
    fn new(mut out: W, dst_mac: [u8; 6], src_mac: [u8; 6]) -> anyhow::Result<Self> {
        // Classic pcap header: magic (microseconds), v2.4, snaplen, Ethernet.
        out.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
        out.write_all(&2u16.to_le_bytes())?;
        out.write_all(&4u16.to_le_bytes())?;
        out.write_all(&0i32.to_le_bytes())?;
        out.write_all(&0u32.to_le_bytes())?;
        out.write_all(&65535u32.to_le_bytes())?;
        out.write_all(&1u32.to_le_bytes())?;
        Ok(Pcap {
            out,
            dst_mac,
            src_mac,
            n: 0,
        })
    }

    /// One TCP SYN from `src` to `dst:port`.
    fn syn(&mut self, src: Ipv4Addr, dst: Ipv4Addr, port: u16) -> anyhow::Result<()> {
        let sport = self.sport();
        let tcp = craft::tcp(sport, port, TcpFlags::SYN);
        self.frame(src, dst, 6, &tcp)
    }

    /// One UDP datagram from `src` to `dst:port` carrying `data`.
    fn udp(&mut self, src: Ipv4Addr, dst: Ipv4Addr, port: u16, data: &[u8]) -> anyhow::Result<()> {
        let sport = self.sport();
        let udp = craft::udp(sport, port, data);
        self.frame(src, dst, 17, &udp)
    }

    fn sport(&self) -> u16 {
        40000 + u16::try_from(self.n % 20000).unwrap_or(0)
    }

    /// One Ethernet frame of an IPv4 packet of protocol `proto`.
    fn frame(&mut self, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> anyhow::Result<()> {
        let ip = craft::ipv4(src, dst, proto, &[], craft::Frag::default(), l4);
        let mut frame = Vec::with_capacity(14 + ip.len());
        frame.extend_from_slice(&self.dst_mac);
        frame.extend_from_slice(&self.src_mac);
        frame.extend_from_slice(&craft::ETH_IPV4.to_be_bytes());
        frame.extend_from_slice(&ip);
        // Timestamps 1 µs apart (tcpreplay --topspeed ignores them).
        let len = u32::try_from(frame.len())?;
        let secs = u32::try_from(self.n / 1_000_000)?;
        let usecs = u32::try_from(self.n % 1_000_000)?;
        self.out.write_all(&secs.to_le_bytes())?;
        self.out.write_all(&usecs.to_le_bytes())?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(&frame)?;
        self.n += 1;
        Ok(())
    }
}

/// 204 bytes of base64 characters (the size of fwknop's usual packet),
/// different for every `i`.
fn junk(i: u32) -> Vec<u8> {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x = u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..204)
        .map(|_| {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            B64[(x % 64) as usize]
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let Some(&first) = args.sequence.first() else {
        bail!("empty sequence");
    };
    if args.count > (1 << 22) - 2 {
        bail!(
            "at most {} spoofed sources fit in 100.64.0.0/10",
            (1 << 22) - 2
        );
    }
    let file =
        File::create(&args.output).with_context(|| format!("create {}", args.output.display()))?;
    let mut pcap = Pcap::new(
        BufWriter::with_capacity(1 << 20, file),
        parse_mac(&args.dst_mac)?,
        parse_mac(&args.src_mac)?,
    )?;
    if args.spa {
        for i in 0..args.count {
            pcap.udp(spoofed(i), args.dst, args.spa_port, &junk(i))?;
        }
    } else {
        for i in 0..args.count {
            pcap.syn(spoofed(i), args.dst, first)?;
        }
    }
    if !args.no_real && !args.spa {
        for &port in &args.sequence {
            pcap.syn(args.src, args.dst, port)?;
        }
    }
    pcap.out.flush()?;
    eprintln!("{}: {} frames", args.output.display(), pcap.n);
    Ok(())
}
