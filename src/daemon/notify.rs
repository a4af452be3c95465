//! Readiness for the service manager: systemd's notify protocol
//! (`Type=notify`, a datagram to `$NOTIFY_SOCKET`), through the `sd-notify`
//! crate. Without `NOTIFY_SOCKET` nothing is sent.
//!
//! * `READY=1` once the daemon can see a knock: every capture socket that
//!   could be opened is open with the engine's kernel filter attached (a
//!   knock from then on is queued in the socket), and the firewall state is
//!   reconciled and restored ([`Daemon::new`]). The shell calls
//!   [`Daemon::notify_ready`] at that point, just before [`Daemon::run`].
//! * `RELOADING=1` (with `MONOTONIC_USEC`, as systemd 253 and later want)
//!   when [`Daemon::run`] starts a reload on SIGHUP, and `READY=1` when it
//!   is done, whether the new configuration was taken or refused.
//! * `STOPPING=1` when the shell starts to stop ([`Daemon::notify_stopping`]).
//! * `STATUS=` with every `READY=1`, and again when an interface goes down
//!   or comes back: the doors, the interfaces captured on and those waited
//!   for (`systemctl status` shows it).
//!
//! A notification that cannot be sent is logged once as a warning; the
//! daemon goes on.

use knock_capture::InterfaceEvent;
use sd_notify::NotifyState;

use super::Daemon;
use crate::engine::Level;

/// At most this many names of a kind in `STATUS=` (then a count).
const NAMES: usize = 8;

/// What the service manager was told, for the next `STATUS=`.
#[derive(Debug, Default)]
pub(super) struct Readiness {
    /// Every capture interface, in order, with whether it is read now.
    interfaces: Vec<(String, bool)>,
    /// A notification failed and was logged.
    warned: bool,
}

/// `a, b, c`, or the first [`NAMES`] and how many more.
fn names<'a>(list: impl IntoIterator<Item = &'a str>) -> String {
    let all: Vec<&str> = list.into_iter().collect();
    if all.is_empty() {
        return "none".to_owned();
    }
    let mut s = all
        .iter()
        .take(NAMES)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if all.len() > NAMES {
        s.push_str(&format!(" and {} more", all.len() - NAMES));
    }
    s
}

impl Daemon {
    /// Tells the service manager that the daemon is ready (`READY=1`) and
    /// what it does (`STATUS=`). Call it once every capture socket is open
    /// with the engine's filter, right before [`Daemon::run`]; `interfaces`
    /// are the capture interfaces with whether each is read now (one that
    /// is down is named as waited for). After this, `run` reports reloads
    /// and interface changes too. Nothing is sent without `NOTIFY_SOCKET`.
    pub fn notify_ready<'a>(&mut self, interfaces: impl IntoIterator<Item = (&'a str, bool)>) {
        self.readiness = Some(Readiness {
            interfaces: interfaces
                .into_iter()
                .map(|(n, up)| (n.to_owned(), up))
                .collect(),
            warned: false,
        });
        let status = self.status_line(None);
        self.notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    }

    /// Tells the service manager that the daemon is stopping (`STOPPING=1`).
    pub fn notify_stopping(&mut self) {
        self.notify(&[NotifyState::Stopping]);
    }

    /// A reload starts (`RELOADING=1`).
    pub(super) fn notify_reloading(&mut self) {
        if self.readiness.is_none() {
            return;
        }
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.notify(&[NotifyState::Reloading, now]),
            Err(_) => self.notify(&[NotifyState::Reloading]),
        }
    }

    /// A reload is over (`READY=1`); `failed`: the old configuration stays.
    pub(super) fn notify_reloaded(&mut self, failed: bool) {
        if self.readiness.is_none() {
            return;
        }
        let status =
            self.status_line(failed.then_some("reload failed, old configuration kept (see log)"));
        self.notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    }

    /// An interface went down or came back: a new `STATUS=`.
    pub(super) fn notify_interface(&mut self, ev: &InterfaceEvent) {
        let Some(r) = &mut self.readiness else {
            return;
        };
        let up = matches!(ev, InterfaceEvent::Up { .. });
        match r.interfaces.iter_mut().find(|(n, _)| n == ev.name()) {
            Some((_, state)) => *state = up,
            None => r.interfaces.push((ev.name().to_owned(), up)),
        }
        let status = self.status_line(None);
        self.notify(&[NotifyState::Status(&status)]);
    }

    /// `STATUS=` text: `note; ` first if given, then the doors, the
    /// interfaces captured on and those waited for.
    fn status_line(&self, note: Option<&str>) -> String {
        let doors: Vec<&str> = self
            .engine
            .matcher()
            .doors()
            .map(|(_, d)| d.name.as_str())
            .collect();
        let mut s = String::new();
        if let Some(note) = note {
            s.push_str(note);
            s.push_str("; ");
        }
        s.push_str(&format!("{} door(s): {}", doors.len(), names(doors)));
        let Some(r) = &self.readiness else {
            return s;
        };
        let up = r
            .interfaces
            .iter()
            .filter(|(_, up)| *up)
            .map(|(n, _)| n.as_str());
        let down: Vec<&str> = r
            .interfaces
            .iter()
            .filter(|(_, up)| !*up)
            .map(|(n, _)| n.as_str())
            .collect();
        s.push_str(&format!("; capturing on {}", names(up)));
        if !down.is_empty() {
            s.push_str(&format!("; down, waiting for: {}", names(down)));
        }
        s
    }

    /// Sends `states`; a failure is logged once.
    fn notify(&mut self, states: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(states) {
            let first = self
                .readiness
                .as_mut()
                .is_none_or(|r| !std::mem::replace(&mut r.warned, true));
            if first {
                self.log.line(
                    Level::Warn,
                    &format!("cannot notify the service manager: {e}"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::names;

    #[test]
    fn long_lists_are_cut() {
        assert_eq!(names(["a", "b"]), "a, b");
        assert_eq!(names([]), "none");
        let many: Vec<String> = (0..10).map(|i| format!("eth{i}")).collect();
        assert_eq!(
            names(many.iter().map(String::as_str)),
            "eth0, eth1, eth2, eth3, eth4, eth5, eth6, eth7 and 2 more"
        );
    }
}
