//! The trait every backend implements, a closure adapter and a recording sink.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use knock_core::Step;

use crate::grant::Grant;

/// What a sink's [`block`](FirewallSink::block) refuses.
///
/// A block only ever refuses *new* connections: a packet that conntrack
/// counts as part of an established connection (or related to one, such as
/// an ICMP error) passes, so a session opened before the block goes on. The
/// reach says to which destinations new connections are refused. Block
/// triggers can come from spoofed packets, so a wide reach lets a spoofer
/// deny a victim more: see the README's security notes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BlockReach {
    /// New connections to these ports (normally the ports the doors'
    /// grants open). With none, the firewall refuses nothing and the block
    /// is the matcher ignoring the address's knocks.
    Ports(Vec<Step>),
    /// New connections to every port of the host.
    #[default]
    Host,
}

/// What [`FirewallSink::reconcile`] did at start-up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reconciled {
    /// Grants or blocks whose end (written down by the sink) had passed and
    /// that were removed.
    pub expired: usize,
    /// Entries that were not ours or could not be read, and were removed.
    pub leftovers: usize,
    /// Entries still valid, kept.
    pub kept: usize,
}

/// Something that applies grants and blocks to the firewall.
///
/// Sinks only apply; they keep no timers. The engine that drives them decides
/// when every grant and block ends and calls [`close`](Self::close) or
/// [`unblock`](Self::unblock) then: `Open` maps to [`open`](Self::open),
/// `Extended` to [`extend`](Self::extend), the end of a grant to
/// [`close`](Self::close), a scanner to [`block`](Self::block) and the end of
/// its block to [`unblock`](Self::unblock). [`reconcile`](Self::reconcile)
/// runs once, at start-up.
///
/// The end of a grant ([`Grant::expires`]) or block (`until`) is still
/// handed to the sink, as a safety net for when the daemon dies: iptables
/// writes it into the rule comment for the next start-up's `reconcile`, and
/// nftables makes it the set element's kernel-side timeout.
///
/// Every operation is idempotent: opening an open grant, closing a closed
/// one or unblocking an address that is not blocked succeeds and changes
/// nothing. Errors name the grant or address and the cause; they are for
/// logging, the sink stays usable.
#[cfg_attr(feature = "mock", mockall::automock(type Error = crate::Error;))]
pub trait FirewallSink {
    /// The sink's error ([`crate::Error`] for the backends of this crate).
    type Error;

    /// Opens `grant.ports` to `grant.src` (or its network). `grant.expires`
    /// is only the safety net described above: closing on time is the
    /// caller's job.
    fn open(&mut self, grant: &Grant) -> Result<(), Self::Error>;

    /// The grant lasts longer (`grant.expires` is the new end). The default
    /// calls [`open`](Self::open), which every backend here treats as "open
    /// or refresh".
    fn extend(&mut self, grant: &Grant) -> Result<(), Self::Error> {
        self.open(grant)
    }

    /// Closes the grant. Closing a grant that is not open (already expired,
    /// never opened) succeeds.
    fn close(&mut self, grant: &Grant) -> Result<(), Self::Error>;

    /// Called once at start-up, before anything else: removes what an
    /// earlier run left behind and whose end (as the sink wrote it down) is
    /// before `now`, grants and blocks alike, and entries that are not ours.
    /// Entries still valid are kept; the caller decides about them.
    fn reconcile(&mut self, now: SystemTime) -> Result<Reconciled, Self::Error>;

    /// Refuses new connections from `src` within the sink's [`BlockReach`];
    /// established connections (and related packets) still pass. The caller
    /// calls [`unblock`](Self::unblock) at `until`; the sink records `until`
    /// as its safety net (blocking an already blocked address moves its end).
    fn block(&mut self, src: IpAddr, until: SystemTime) -> Result<(), Self::Error>;

    /// Lets traffic from `src` through again. Unblocking an address that is
    /// not blocked succeeds.
    fn unblock(&mut self, src: IpAddr) -> Result<(), Self::Error>;
}

impl<S: FirewallSink + ?Sized> FirewallSink for Box<S> {
    type Error = S::Error;
    fn open(&mut self, grant: &Grant) -> Result<(), Self::Error> {
        (**self).open(grant)
    }
    fn extend(&mut self, grant: &Grant) -> Result<(), Self::Error> {
        (**self).extend(grant)
    }
    fn close(&mut self, grant: &Grant) -> Result<(), Self::Error> {
        (**self).close(grant)
    }
    fn reconcile(&mut self, now: SystemTime) -> Result<Reconciled, Self::Error> {
        (**self).reconcile(now)
    }
    fn block(&mut self, src: IpAddr, until: SystemTime) -> Result<(), Self::Error> {
        (**self).block(src, until)
    }
    fn unblock(&mut self, src: IpAddr) -> Result<(), Self::Error> {
        (**self).unblock(src)
    }
}

/// One call made to a sink, as recorded by [`RecordingSink`] and passed to
/// the closure of [`FnSink`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// [`FirewallSink::open`].
    Open(Grant),
    /// [`FirewallSink::extend`].
    Extend(Grant),
    /// [`FirewallSink::close`].
    Close(Grant),
    /// [`FirewallSink::reconcile`].
    Reconcile(SystemTime),
    /// [`FirewallSink::block`]: the address and when its block ends.
    Block(IpAddr, SystemTime),
    /// [`FirewallSink::unblock`].
    Unblock(IpAddr),
}

/// A sink made of one closure that receives every [`Action`].
///
/// ```
/// use knock_firewall::{Action, FirewallSink, FnSink, Grant};
/// use knock_core::Step;
///
/// let mut opened = 0;
/// let mut sink = FnSink::new(|a: Action| -> Result<(), std::io::Error> {
///     if matches!(a, Action::Open(_)) {
///         opened += 1;
///     }
///     Ok(())
/// });
/// let g = Grant::new("ssh", "198.18.0.2".parse().unwrap(), 1, vec![Step::tcp(22)]);
/// sink.open(&g).unwrap();
/// drop(sink);
/// assert_eq!(opened, 1);
/// ```
pub struct FnSink<F>(F);

impl<F> FnSink<F> {
    /// Wraps `f`.
    pub fn new(f: F) -> Self {
        FnSink(f)
    }
}

impl<F> std::fmt::Debug for FnSink<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnSink")
    }
}

impl<F, E> FirewallSink for FnSink<F>
where
    F: FnMut(Action) -> Result<(), E>,
{
    type Error = E;
    fn open(&mut self, grant: &Grant) -> Result<(), E> {
        (self.0)(Action::Open(grant.clone()))
    }
    fn extend(&mut self, grant: &Grant) -> Result<(), E> {
        (self.0)(Action::Extend(grant.clone()))
    }
    fn close(&mut self, grant: &Grant) -> Result<(), E> {
        (self.0)(Action::Close(grant.clone()))
    }
    fn reconcile(&mut self, now: SystemTime) -> Result<Reconciled, E> {
        (self.0)(Action::Reconcile(now)).map(|()| Reconciled::default())
    }
    fn block(&mut self, src: IpAddr, until: SystemTime) -> Result<(), E> {
        (self.0)(Action::Block(src, until))
    }
    fn unblock(&mut self, src: IpAddr) -> Result<(), E> {
        (self.0)(Action::Unblock(src))
    }
}

/// A sink that records every call, for other crates' tests.
///
/// Clones share the record, so a test keeps one clone and hands the other to
/// the daemon.
///
/// ```
/// use knock_firewall::{Action, FirewallSink, Grant, RecordingSink};
/// use knock_core::Step;
///
/// let rec = RecordingSink::new();
/// let mut sink = rec.clone();
/// let g = Grant::new("ssh", "198.18.0.2".parse().unwrap(), 7, vec![Step::tcp(22)]);
/// sink.open(&g).unwrap();
/// sink.close(&g).unwrap();
/// assert_eq!(rec.actions(), vec![Action::Open(g.clone()), Action::Close(g)]);
/// assert!(rec.open_grants().is_empty());
///
/// let scanner = "198.18.0.66".parse().unwrap();
/// let until = std::time::SystemTime::now() + std::time::Duration::from_secs(600);
/// sink.block(scanner, until).unwrap();
/// assert_eq!(rec.blocked(), vec![(scanner, until)]);
/// sink.unblock(scanner).unwrap();
/// assert!(rec.blocked().is_empty());
/// ```
#[derive(Clone, Debug, Default)]
pub struct RecordingSink {
    actions: Arc<Mutex<Vec<Action>>>,
}

impl RecordingSink {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every call so far, in order.
    pub fn actions(&self) -> Vec<Action> {
        self.actions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Takes the record, leaving it empty.
    pub fn take(&self) -> Vec<Action> {
        std::mem::take(&mut *self.actions.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Grants opened (or extended) and not closed since, by (door, src).
    pub fn open_grants(&self) -> Vec<Grant> {
        let mut open: Vec<Grant> = Vec::new();
        for a in self.actions() {
            match a {
                Action::Open(g) | Action::Extend(g) => {
                    open.retain(|o| !(o.door == g.door && o.src == g.src));
                    open.push(g);
                }
                Action::Close(g) => open.retain(|o| !(o.door == g.door && o.src == g.src)),
                _ => {}
            }
        }
        open
    }

    /// Addresses blocked and not unblocked since, with the end of their
    /// latest block, in the order they were (last) blocked.
    pub fn blocked(&self) -> Vec<(IpAddr, SystemTime)> {
        let mut blocked: Vec<(IpAddr, SystemTime)> = Vec::new();
        for a in self.actions() {
            match a {
                Action::Block(ip, until) => {
                    blocked.retain(|(b, _)| *b != ip);
                    blocked.push((ip, until));
                }
                Action::Unblock(ip) => blocked.retain(|(b, _)| *b != ip),
                _ => {}
            }
        }
        blocked
    }

    fn push(&self, a: Action) {
        self.actions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(a);
    }
}

impl FirewallSink for RecordingSink {
    type Error = Infallible;
    fn open(&mut self, grant: &Grant) -> Result<(), Infallible> {
        self.push(Action::Open(grant.clone()));
        Ok(())
    }
    fn extend(&mut self, grant: &Grant) -> Result<(), Infallible> {
        self.push(Action::Extend(grant.clone()));
        Ok(())
    }
    fn close(&mut self, grant: &Grant) -> Result<(), Infallible> {
        self.push(Action::Close(grant.clone()));
        Ok(())
    }
    fn reconcile(&mut self, now: SystemTime) -> Result<Reconciled, Infallible> {
        self.push(Action::Reconcile(now));
        Ok(Reconciled::default())
    }
    fn block(&mut self, src: IpAddr, until: SystemTime) -> Result<(), Infallible> {
        self.push(Action::Block(src, until));
        Ok(())
    }
    fn unblock(&mut self, src: IpAddr) -> Result<(), Infallible> {
        self.push(Action::Unblock(src));
        Ok(())
    }
}

#[cfg(all(test, feature = "mock"))]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_mock_has_block_until_and_unblock() {
        let src: IpAddr = "198.18.0.66".parse().unwrap();
        let until = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let mut mock = MockFirewallSink::new();
        mock.expect_block()
            .withf(move |s, u| *s == src && *u == until)
            .times(1)
            .returning(|_, _| Ok(()));
        mock.expect_unblock()
            .withf(move |s| *s == src)
            .times(1)
            .returning(|_| Ok(()));
        let mut sink: Box<dyn FirewallSink<Error = crate::Error>> = Box::new(mock);
        sink.block(src, until).unwrap();
        sink.unblock(src).unwrap();
    }
}
