//! The trait every backend implements, a closure adapter and a recording sink.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use crate::grant::Grant;

/// What [`FirewallSink::reconcile`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reconciled {
    /// Grants or blocks whose time was over and that were removed (or whose
    /// stop command was run).
    pub expired: usize,
    /// Entries that were not ours or could not be read, and were removed.
    pub leftovers: usize,
    /// Entries still valid, kept (and rescheduled where the sink schedules).
    pub kept: usize,
}

/// Something that turns grants into firewall state.
///
/// The daemon maps [`knock_core::Decision::Open`] to [`open`](Self::open),
/// `Extended` to [`extend`](Self::extend) and `Close` to
/// [`close`](Self::close), calls [`reconcile`](Self::reconcile) once at
/// start-up (and may call it periodically: the iptables sink removes expired
/// rules there), and [`block`](Self::block) for the scanner blocklist.
///
/// Every operation is idempotent: opening an open grant or closing a closed
/// one succeeds and changes nothing. Errors name the grant and the cause;
/// they are for logging, the sink stays usable.
#[cfg_attr(feature = "mock", mockall::automock(type Error = crate::Error;))]
pub trait FirewallSink {
    /// The sink's error ([`crate::Error`] for the backends of this crate).
    type Error;

    /// Opens `grant.ports` to `grant.src` (or its network) until `grant.expires`.
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

    /// Brings the firewall in line with `now`: removes grants and blocks whose
    /// time is over, and the daemon's leftovers; runs due stop commands.
    fn reconcile(&mut self, now: SystemTime) -> Result<Reconciled, Self::Error>;

    /// Drops all traffic from `src` for `duration`.
    fn block(&mut self, src: IpAddr, duration: Duration) -> Result<(), Self::Error>;

    /// When something this sink holds next expires *without* the sink
    /// removing it by itself: the caller should call
    /// [`reconcile`](Self::reconcile) then. iptables rules have no expiry of
    /// their own, so the iptables sink reports the earliest grant or block
    /// left after a restart or added by [`block`](Self::block); sinks that
    /// expire entries themselves (nftables in the kernel, commands on their
    /// own timer) return `None`.
    fn next_expiry(&self) -> Option<SystemTime> {
        None
    }
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
    fn block(&mut self, src: IpAddr, duration: Duration) -> Result<(), Self::Error> {
        (**self).block(src, duration)
    }
    fn next_expiry(&self) -> Option<SystemTime> {
        (**self).next_expiry()
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
    /// [`FirewallSink::block`].
    Block(IpAddr, Duration),
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
    fn block(&mut self, src: IpAddr, duration: Duration) -> Result<(), E> {
        (self.0)(Action::Block(src, duration))
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
    fn block(&mut self, src: IpAddr, duration: Duration) -> Result<(), Infallible> {
        self.push(Action::Block(src, duration));
        Ok(())
    }
}
