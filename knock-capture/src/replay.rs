//! Replay of pcap and pcapng files.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::time::{Duration, Instant};

use knock_core::{Listen, Timestamp};
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};

use crate::source::{Captured, Next, Source, Stats, UserFilter};
use crate::{parse_with_payload, CaptureError, LinkType};

/// The first four bytes of a pcapng file (a section header block).
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

type Reader = Box<dyn Read + Send>;

/// A parsed frame, its link type and interface.
type Frame = (Parsed, LinkType, u32);

/// A frame's knock and the payload a [`Captured`] keeps, or why it has none.
type Parsed = Result<(knock_core::Event, Option<Box<[u8]>>), crate::Reject>;

/// A pcapng interface: its link type (if we parse it) and clock.
#[derive(Clone, Copy, Debug)]
struct NgIface {
    link: Option<LinkType>,
    /// Timestamp units per second (`if_tsresol`, default 10^6).
    units: u128,
    /// Seconds to add (`if_tsoffset`).
    offset: u64,
}

enum Inner {
    Pcap {
        reader: PcapReader<Reader>,
        link: LinkType,
    },
    PcapNg {
        reader: PcapNgReader<Reader>,
        ifaces: Vec<NgIface>,
        last: Timestamp,
    },
    Done,
}

/// Replays a pcap or pcapng capture: frames in file order, each
/// [`knock_core::Event::time`] taken from the file (microseconds since the
/// Unix epoch), link types from the file (Ethernet, Linux cooked v1/v2, raw
/// IP, IPv4, IPv6; a pcapng file may mix interfaces of different types).
///
/// Replays ignore deadlines (file time is not wall-clock time) and return
/// [`Next::End`] after the last frame. Until [`Source::set_listen`] is
/// called every event is returned; after it, only events some entry
/// [`Listen::matches`] (what the kernel filter would have let through).
pub struct ReplaySource {
    inner: Inner,
    stats: Stats,
    filter: UserFilter,
}

impl std::fmt::Debug for ReplaySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplaySource")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl ReplaySource {
    /// Opens a capture file; pcap or pcapng is told by its first bytes.
    pub fn open(path: impl AsRef<Path>) -> Result<ReplaySource, CaptureError> {
        let path = path.as_ref();
        let f = File::open(path)
            .map_err(|e| CaptureError::io(format!("open {}", path.display()), e))?;
        ReplaySource::from_reader(f)
    }

    /// Reads a capture from any reader.
    pub fn from_reader(r: impl Read + Send + 'static) -> Result<ReplaySource, CaptureError> {
        let mut br = BufReader::new(r);
        let head = br
            .fill_buf()
            .map_err(|e| CaptureError::io("read capture header", e))?;
        let ng = head.get(..4) == Some(&PCAPNG_MAGIC[..]);
        let reader: Reader = Box::new(br);
        let inner = if ng {
            Inner::PcapNg {
                reader: PcapNgReader::new(reader)?,
                ifaces: Vec::new(),
                last: Timestamp::ZERO,
            }
        } else {
            let reader = PcapReader::new(reader)?;
            let dl = u32::from(reader.header().datalink);
            let link = LinkType::from_linktype(dl).ok_or(CaptureError::UnsupportedLinkType(dl))?;
            Inner::Pcap { reader, link }
        };
        Ok(ReplaySource {
            inner,
            stats: Stats::default(),
            filter: UserFilter::default(),
        })
    }

    /// Reads the next frame: `Ok(None)` at the end.
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        loop {
            match &mut self.inner {
                Inner::Done => return Ok(None),
                Inner::Pcap { reader, link } => {
                    let link = *link;
                    match reader.next_packet() {
                        None => {
                            self.inner = Inner::Done;
                        }
                        Some(Err(e)) => {
                            self.inner = Inner::Done;
                            return Err(e.into());
                        }
                        Some(Ok(p)) => {
                            let t = micros(p.timestamp);
                            return Ok(Some((parse_kept(&self.filter, link, &p.data, t), link, 0)));
                        }
                    }
                }
                Inner::PcapNg {
                    reader,
                    ifaces,
                    last,
                } => {
                    let block = match reader.next_block() {
                        None => {
                            self.inner = Inner::Done;
                            continue;
                        }
                        Some(Err(e)) => {
                            self.inner = Inner::Done;
                            return Err(e.into());
                        }
                        Some(Ok(b)) => b,
                    };
                    let (id, t, data) = match block {
                        Block::SectionHeader(_) => {
                            ifaces.clear();
                            continue;
                        }
                        Block::InterfaceDescription(idb) => {
                            let mut i = NgIface {
                                link: LinkType::from_linktype(u32::from(idb.linktype)),
                                units: 1_000_000,
                                offset: 0,
                            };
                            for o in &idb.options {
                                match o {
                                    InterfaceDescriptionOption::IfTsResol(r) => {
                                        let (base, exp) = if r & 0x80 != 0 {
                                            (2u128, r & 0x7f)
                                        } else {
                                            (10, *r)
                                        };
                                        i.units = base
                                            .checked_pow(u32::from(exp))
                                            .unwrap_or(1_000_000)
                                            .max(1);
                                    }
                                    InterfaceDescriptionOption::IfTsOffset(s) => i.offset = *s,
                                    _ => {}
                                }
                            }
                            ifaces.push(i);
                            continue;
                        }
                        Block::EnhancedPacket(epb) => {
                            // pcap-file hands over the raw timestamp as "nanoseconds";
                            // its real unit is the interface's if_tsresol.
                            let raw = epb.timestamp.as_nanos();
                            let Some(i) = ifaces.get(epb.interface_id as usize) else {
                                continue;
                            };
                            let us = raw.saturating_mul(1_000_000) / i.units;
                            let us = u64::try_from(us).unwrap_or(u64::MAX);
                            let t = Timestamp::from_micros(
                                us.saturating_add(i.offset.saturating_mul(1_000_000)),
                            );
                            (epb.interface_id, t, epb.data.into_owned())
                        }
                        // No timestamp: the previous frame's.
                        Block::SimplePacket(spb) => (0, *last, spb.data.into_owned()),
                        _ => continue,
                    };
                    *last = t;
                    let link = ifaces.get(id as usize).and_then(|i| i.link);
                    let Some(link) = link else {
                        self.stats.unsupported_link += 1;
                        continue;
                    };
                    return Ok(Some((parse_kept(&self.filter, link, &data, t), link, id)));
                }
            }
        }
    }
}

/// Parses a frame and keeps the datagram payload `filter` asks for (see
/// [`Captured::payload`]).
fn parse_kept(filter: &UserFilter, link: LinkType, bytes: &[u8], t: Timestamp) -> Parsed {
    parse_with_payload(link, bytes, t).map(|(e, data)| {
        (
            e,
            UserFilter::payload(&e, data, || filter.wants_payload(&e)),
        )
    })
}

fn micros(d: Duration) -> Timestamp {
    Timestamp::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

impl Source for ReplaySource {
    fn next_event(&mut self, _deadline: Option<Instant>) -> Result<Next, CaptureError> {
        while let Some((r, link, ifindex)) = self.next_frame()? {
            self.stats
                .count(&r.as_ref().map(|(e, _)| *e).map_err(|e| *e));
            if let Ok((event, payload)) = r {
                if self
                    .filter
                    .admits(&event, &mut self.stats, |_| true)
                    .is_some()
                {
                    return Ok(Next::Event(Captured {
                        event,
                        link,
                        ifindex,
                        payload,
                    }));
                }
            }
        }
        Ok(Next::End)
    }

    fn set_listen(&mut self, listen: &[Listen]) -> Result<(), CaptureError> {
        self.filter.set(listen);
        Ok(())
    }

    fn stats(&mut self) -> Stats {
        self.stats
    }

    fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}
