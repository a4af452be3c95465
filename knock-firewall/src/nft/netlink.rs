//! Set-element messages written by hand.
//!
//! rustables 0.9 models a set element as a key only: it has no
//! `NFTA_SET_ELEM_TIMEOUT`, which is the whole point of this sink (the
//! kernel expires each grant by itself). So element updates are encoded here
//! (nfnetlink batch, `NFT_MSG_NEWSETELEM`/`NFT_MSG_DELSETELEM`, nested
//! attributes as in `linux/netfilter/nf_tables.h`) and sent over a netlink
//! socket the sink keeps open: one `sendmsg` and one `recv` per knock, no
//! process.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{
    bind, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 0x2;
const NLA_F_NESTED: u16 = 0x8000;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFPROTO_INET: u8 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_DATA_VALUE: u16 = 1;

/// One element operation.
#[derive(Debug)]
pub(crate) struct ElemOp<'a> {
    pub(crate) delete: bool,
    pub(crate) table: &'a str,
    pub(crate) set: &'a str,
    pub(crate) key: &'a [u8],
    /// `None`: the set's default timeout (or none).
    pub(crate) timeout: Option<Duration>,
}

fn pad(buf: &mut Vec<u8>) {
    while buf.len() % 4 != 0 {
        buf.push(0);
    }
}

/// Writes an attribute header, runs `body`, then patches the length.
fn attr(buf: &mut Vec<u8>, ty: u16, body: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&ty.to_ne_bytes());
    body(buf);
    let len = u16::try_from(buf.len() - start).unwrap_or(u16::MAX);
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    pad(buf);
}

fn msg(
    buf: &mut Vec<u8>,
    ty: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    body: impl FnOnce(&mut Vec<u8>),
) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]); // nlmsg_len
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // pid
    buf.push(family); // nfgenmsg
    buf.push(0); // NFNETLINK_V0
    buf.extend_from_slice(&res_id.to_be_bytes());
    body(buf);
    pad(buf);
    let len = u32::try_from(buf.len() - start).unwrap_or(u32::MAX);
    buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

fn cstr(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(s.as_bytes());
    buf.push(0);
}

/// Encodes a batch; returns the bytes and the sequence numbers of the element messages.
pub(crate) fn encode(ops: &[ElemOp<'_>], first_seq: u32) -> (Vec<u8>, Vec<u32>) {
    let mut buf = Vec::with_capacity(128 * (ops.len() + 2));
    let mut seq = first_seq;
    msg(
        &mut buf,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
        |_| {},
    );
    let mut seqs = Vec::with_capacity(ops.len());
    for op in ops {
        seq = seq.wrapping_add(1);
        seqs.push(seq);
        let (ty, flags) = if op.delete {
            (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK)
        } else {
            (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE)
        };
        msg(
            &mut buf,
            (NFNL_SUBSYS_NFTABLES << 8) | ty,
            flags,
            seq,
            NFPROTO_INET,
            0,
            |b| {
                attr(b, NFTA_SET_ELEM_LIST_TABLE, |b| cstr(b, op.table));
                attr(b, NFTA_SET_ELEM_LIST_SET, |b| cstr(b, op.set));
                attr(b, NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED, |b| {
                    attr(b, NFTA_LIST_ELEM | NLA_F_NESTED, |b| {
                        attr(b, NFTA_SET_ELEM_KEY | NLA_F_NESTED, |b| {
                            attr(b, NFTA_DATA_VALUE, |b| b.extend_from_slice(op.key));
                        });
                        if let Some(t) = op.timeout {
                            let ms = u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1);
                            attr(b, NFTA_SET_ELEM_TIMEOUT, |b| {
                                b.extend_from_slice(&ms.to_be_bytes())
                            });
                        }
                    });
                });
            },
        );
    }
    seq = seq.wrapping_add(1);
    msg(
        &mut buf,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
        |_| {},
    );
    (buf, seqs)
}

/// A netfilter netlink socket, opened in the network namespace of the thread that made it.
#[derive(Debug)]
pub(crate) struct NlSocket {
    fd: OwnedFd,
    seq: u32,
}

fn nix_io(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

impl NlSocket {
    pub(crate) fn open() -> io::Result<NlSocket> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )
        .map_err(nix_io)?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(nix_io)?;
        setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(2, 0)).map_err(nix_io)?;
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Ok(NlSocket { fd, seq })
    }

    /// Sends `ops` as one transaction. `Err(Ok(errno))`: the kernel refused
    /// (the first error); `Err(Err(io))`: the socket failed.
    pub(crate) fn apply(&mut self, ops: &[ElemOp<'_>]) -> Result<(), Result<i32, io::Error>> {
        let (bytes, seqs) = encode(ops, self.seq);
        self.seq = self.seq.wrapping_add(ops.len() as u32 + 2);
        send(self.fd.as_raw_fd(), &bytes, MsgFlags::empty()).map_err(|e| Err(nix_io(e)))?;
        let mut waiting: Vec<u32> = seqs;
        let mut first_err = None;
        let mut buf = vec![0u8; 16384];
        while !waiting.is_empty() {
            let n = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())
                .map_err(|e| Err(nix_io(e)))?;
            let mut off = 0;
            while off + 16 <= n {
                let rd32 =
                    |o: usize| u32::from_ne_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
                let len = rd32(off) as usize;
                let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
                let seq = rd32(off + 8);
                if len < 16 || off + len > n {
                    break;
                }
                if ty == NLMSG_ERROR && len >= 20 {
                    let errno = i32::from_ne_bytes([
                        buf[off + 16],
                        buf[off + 17],
                        buf[off + 18],
                        buf[off + 19],
                    ]);
                    if let Some(i) = waiting.iter().position(|&s| s == seq) {
                        waiting.swap_remove(i);
                        if errno != 0 && first_err.is_none() {
                            first_err = Some(-errno);
                        }
                    }
                }
                off += (len + 3) & !3;
            }
            if first_err.is_some() {
                // The transaction is aborted; the remaining answers may not come.
                break;
            }
        }
        match first_err {
            Some(e) => {
                self.drain();
                Err(Ok(e))
            }
            None => Ok(()),
        }
    }

    /// Reads what is left of an aborted transaction's answers.
    fn drain(&mut self) {
        let mut buf = vec![0u8; 16384];
        while recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT).is_ok() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_a_batch_with_timeout() {
        let key = [198, 18, 0, 2];
        let ops = [ElemOp {
            delete: false,
            table: "knock",
            set: "d0_4",
            key: &key,
            timeout: Some(Duration::from_secs(10)),
        }];
        let (b, seqs) = encode(&ops, 100);
        assert_eq!(seqs, [101]);
        assert_eq!(b.len() % 4, 0);
        // begin (20) + element message + end (20)
        let first = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        assert_eq!(first, 20);
        let second = u32::from_ne_bytes([b[20], b[21], b[22], b[23]]) as usize;
        assert_eq!(20 + second + 20, b.len());
        let ty = u16::from_ne_bytes([b[24], b[25]]);
        assert_eq!(ty, (10 << 8) | 12);
        // the timeout, 10 000 ms big-endian, is in there
        let ms = 10_000u64.to_be_bytes();
        assert!(b.windows(8).any(|w| w == ms));
        assert!(b.windows(4).any(|w| w == key));
    }
}
