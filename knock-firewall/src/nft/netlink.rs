//! Set-element messages written by hand.
//!
//! rustables 0.9 models a set element as a key only: it has no
//! `NFTA_SET_ELEM_TIMEOUT`, which is the whole point of this sink (the
//! kernel expires each grant by itself). So element updates are encoded here
//! (nfnetlink batch, `NFT_MSG_NEWSETELEM`/`NFT_MSG_DELSETELEM`, nested
//! attributes as in `linux/netfilter/nf_tables.h`) and sent over a netlink
//! socket the sink keeps open: one `sendmsg` and one `recv` per knock, no
//! process.
//!
//! Whole-table transactions (rustables builds the messages) go out the same
//! way, on a socket of their own: one `sendmsg` of every message between
//! `NFNL_MSG_BATCH_BEGIN` and `_END`, which the kernel applies as one
//! transaction or not at all. Only the last message asks for an
//! acknowledgement (the kernel reports every failing message anyway, and
//! sends the acknowledgements only after the commit), and the socket
//! buffers are raised to the batch's size, so no size of ruleset overflows
//! them. Without the `_END` message the kernel checks the whole transaction
//! and then aborts it: `nft --check` does the same.

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
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 0x2;
const NLMSG_DONE: u16 = 0x3;
const NLMSG_HDRLEN: usize = 16;
const NLA_F_NESTED: u16 = 0x8000;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_GETSET: u16 = 10;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFPROTO_INET: u8 = 1;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
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

/// The most a whole-table transaction may take (the socket buffers are
/// raised to hold it): about a quarter of a million rules.
pub(crate) const MAX_TRANSACTION: usize = 64 << 20;

/// A set of a table, as the kernel lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SetInfo {
    pub(crate) name: String,
    pub(crate) flags: u32,
    pub(crate) key_type: u32,
    pub(crate) key_len: u32,
}

/// The messages of a netlink buffer: `(offset, length)`, lengths aligned.
fn messages(buf: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + NLMSG_HDRLEN <= buf.len() {
        let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
        if len < NLMSG_HDRLEN || off + len > buf.len() {
            break;
        }
        out.push((off, len));
        off += (len + 3) & !3;
    }
    out
}

fn header(buf: &[u8], off: usize) -> (u16, u16, u32) {
    let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
    let flags = u16::from_ne_bytes([buf[off + 6], buf[off + 7]]);
    let seq = u32::from_ne_bytes([buf[off + 8], buf[off + 9], buf[off + 10], buf[off + 11]]);
    (ty, flags, seq)
}

/// The errno of an `NLMSG_ERROR` message at `off` (0: an acknowledgement).
fn error_of(buf: &[u8], off: usize, len: usize) -> Option<i32> {
    (len >= NLMSG_HDRLEN + 4).then(|| {
        let o = off + NLMSG_HDRLEN;
        -i32::from_ne_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]])
    })
}

/// The attributes of a message body: `(type, payload)`.
fn attributes(body: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 4 <= body.len() {
        let len = usize::from(u16::from_ne_bytes([body[off], body[off + 1]]));
        let ty = u16::from_ne_bytes([body[off + 2], body[off + 3]]) & 0x3fff;
        if len < 4 || off + len > body.len() {
            break;
        }
        out.push((ty, &body[off + 4..off + len]));
        off += (len + 3) & !3;
    }
    out
}

/// A NUL-terminated string attribute.
fn c_string(v: &[u8]) -> String {
    let v = v.split(|&b| b == 0).next().unwrap_or_default();
    String::from_utf8_lossy(v).into_owned()
}

fn be32(b: &[u8]) -> u32 {
    b.get(..4)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Makes a rustables batch ours: sequence numbers from `first_seq`, an
/// acknowledgement asked for the last message only, and no `_END` message
/// for a dry run. Returns the bytes, the sequence number of the
/// `_BEGIN` message and that of the last message.
pub(crate) fn prepare(
    mut batch: Vec<u8>,
    first_seq: u32,
    commit: bool,
) -> io::Result<(Vec<u8>, u32, u32)> {
    let msgs = messages(&batch);
    let bad = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("nftables batch: {what}"),
        )
    };
    let (Some(&(first, _)), Some(&(end, end_len))) = (msgs.first(), msgs.last()) else {
        return Err(bad("empty"));
    };
    if msgs.len() < 3
        || header(&batch, first).0 != NFNL_MSG_BATCH_BEGIN
        || header(&batch, end).0 != NFNL_MSG_BATCH_END
        || end + end_len != batch.len()
    {
        return Err(bad("not one BEGIN..END batch"));
    }
    let last = msgs.len() - 2;
    let mut seq = first_seq;
    for (i, &(off, _)) in msgs.iter().enumerate() {
        let (_, flags, _) = header(&batch, off);
        let flags = if i == last {
            flags | NLM_F_ACK
        } else {
            flags & !NLM_F_ACK
        };
        batch[off + 6..off + 8].copy_from_slice(&flags.to_ne_bytes());
        batch[off + 8..off + 12].copy_from_slice(&seq.to_ne_bytes());
        seq = seq.wrapping_add(1);
    }
    if !commit {
        batch.truncate(end);
    }
    Ok((batch, first_seq, first_seq.wrapping_add(last as u32)))
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

    /// Sends a whole transaction (the bytes of a rustables batch) in one
    /// `sendmsg`; with `commit` false, a dry run: the kernel checks every
    /// message, then aborts. `Err(Ok(errno))`: the kernel refused (the
    /// first error; nothing changed); `Err(Err(io))`: the socket failed.
    pub(crate) fn transact(
        &mut self,
        batch: Vec<u8>,
        commit: bool,
    ) -> Result<(), Result<i32, io::Error>> {
        if batch.len() > MAX_TRANSACTION {
            return Err(Ok(libc_emsgsize()));
        }
        let (bytes, begin, last) = prepare(batch, self.seq, commit).map_err(Err)?;
        let count = messages(&bytes).len();
        self.seq = last.wrapping_add(2);
        // Room for the batch, and for an error about every message (each
        // quotes its message).
        let snd = bytes.len() + 65536;
        let rcv = (bytes.len() + 1024 * count).clamp(1 << 18, MAX_TRANSACTION);
        if setsockopt(&self.fd, sockopt::SndBufForce, &snd).is_err() {
            setsockopt(&self.fd, sockopt::SndBuf, &snd).map_err(|e| Err(nix_io(e)))?;
        }
        if setsockopt(&self.fd, sockopt::RcvBufForce, &rcv).is_err() {
            setsockopt(&self.fd, sockopt::RcvBuf, &rcv).map_err(|e| Err(nix_io(e)))?;
        }
        setsockopt(&self.fd, sockopt::ReceiveTimeout, &TimeVal::new(30, 0))
            .map_err(|e| Err(nix_io(e)))?;
        send(self.fd.as_raw_fd(), &bytes, MsgFlags::empty()).map_err(|e| Err(nix_io(e)))?;
        let mut first_err = None;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(n) => n,
                // Errors overflowed even the raised buffer: refused.
                Err(nix::Error::ENOBUFS) => return Err(Ok(first_err.unwrap_or(libc_enobufs()))),
                Err(e) => return Err(Err(nix_io(e))),
            };
            let mut done = false;
            for (off, len) in messages(&buf[..n]) {
                let (ty, _, seq) = header(&buf, off);
                if ty != NLMSG_ERROR {
                    continue;
                }
                let errno = error_of(&buf, off, len).unwrap_or(0);
                if errno != 0 && first_err.is_none() {
                    first_err = Some(errno);
                }
                // The last message's answer comes after everything else;
                // an error about `_BEGIN` (no permission, ...) may be all
                // that comes.
                if seq == last || (seq == begin && errno != 0) {
                    done = true;
                }
            }
            if done {
                break;
            }
        }
        self.drain();
        match first_err {
            Some(e) => Err(Ok(e)),
            None => Ok(()),
        }
    }

    /// The sets of `table` (family `inet`); none if the table does not exist.
    pub(crate) fn list_sets(
        &mut self,
        table: &str,
    ) -> Result<Vec<SetInfo>, Result<i32, io::Error>> {
        let bodies = self.dump(NFT_MSG_GETSET, Some(table))?;
        let mut sets = Vec::new();
        for body in bodies {
            let mut set = SetInfo {
                name: String::new(),
                flags: 0,
                key_type: 0,
                key_len: 0,
            };
            for (at, v) in attributes(&body) {
                match at {
                    NFTA_SET_NAME => set.name = c_string(v),
                    NFTA_SET_FLAGS => set.flags = be32(v),
                    NFTA_SET_KEY_TYPE => set.key_type = be32(v),
                    NFTA_SET_KEY_LEN => set.key_len = be32(v),
                    _ => {}
                }
            }
            if !set.name.is_empty() {
                sets.push(set);
            }
        }
        Ok(sets)
    }

    /// The names of the `inet` tables.
    pub(crate) fn list_tables(&mut self) -> Result<Vec<String>, Result<i32, io::Error>> {
        let bodies = self.dump(NFT_MSG_GETTABLE, None)?;
        Ok(bodies
            .iter()
            .filter_map(|b| {
                attributes(b)
                    .into_iter()
                    .find(|&(at, _)| at == NFTA_TABLE_NAME)
                    .map(|(_, v)| c_string(v))
            })
            .collect())
    }

    /// A dump request (family `inet`, of one table's objects with
    /// `table`): the bodies (attributes) of the answers. A table that does
    /// not exist has no objects.
    fn dump(
        &mut self,
        ty: u16,
        table: Option<&str>,
    ) -> Result<Vec<Vec<u8>>, Result<i32, io::Error>> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let mut req = Vec::new();
        msg(
            &mut req,
            (NFNL_SUBSYS_NFTABLES << 8) | ty,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            NFPROTO_INET,
            0,
            |b| {
                if let Some(t) = table {
                    attr(b, NFTA_SET_TABLE, |b| cstr(b, t));
                }
            },
        );
        send(self.fd.as_raw_fd(), &req, MsgFlags::empty()).map_err(|e| Err(nix_io(e)))?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())
                .map_err(|e| Err(nix_io(e)))?;
            for (off, len) in messages(&buf[..n]) {
                let (ty, _, got) = header(&buf, off);
                if got != seq {
                    continue;
                }
                match ty {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => match error_of(&buf, off, len).unwrap_or(0) {
                        0 => return Ok(out),
                        2 => return Ok(Vec::new()), // ENOENT: no such table
                        e => return Err(Ok(e)),
                    },
                    // nlmsghdr, then nfgenmsg (4 bytes), then attributes.
                    _ if len >= NLMSG_HDRLEN + 4 => {
                        out.push(buf[off + NLMSG_HDRLEN + 4..off + len].to_vec());
                    }
                    _ => {}
                }
            }
        }
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

fn libc_emsgsize() -> i32 {
    nix::Error::EMSGSIZE as i32
}

fn libc_enobufs() -> i32 {
    nix::Error::ENOBUFS as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_asks_only_the_last_message_for_an_answer() {
        let ops = [
            ElemOp {
                delete: false,
                table: "knock",
                set: "s",
                key: &[198, 18, 0, 2],
                timeout: None,
            },
            ElemOp {
                delete: true,
                table: "knock",
                set: "s",
                key: &[198, 18, 0, 3],
                timeout: None,
            },
        ];
        let (batch, _) = encode(&ops, 7);
        let (b, begin, last) = prepare(batch.clone(), 1000, true).unwrap();
        assert_eq!((begin, last), (1000, 1002));
        let msgs = messages(&b);
        assert_eq!(msgs.len(), 4);
        let heads: Vec<_> = msgs.iter().map(|&(o, _)| header(&b, o)).collect();
        let acks: Vec<bool> = heads.iter().map(|h| h.1 & NLM_F_ACK != 0).collect();
        assert_eq!(acks, [false, false, true, false]);
        let seqs: Vec<u32> = heads.iter().map(|h| h.2).collect();
        assert_eq!(seqs, [1000, 1001, 1002, 1003]);
        assert_eq!(heads[3].0, NFNL_MSG_BATCH_END);
        // A dry run: the same without `_END`.
        let (dry, _, _) = prepare(batch, 1000, false).unwrap();
        assert_eq!(dry, b[..b.len() - 20]);
        // Not a batch: refused.
        assert!(prepare(b[20..].to_vec(), 1, true).is_err());
        assert!(prepare(Vec::new(), 1, true).is_err());
    }

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
