//! Single Packet Authorization in the engine: the verifier of the SPA
//! doors' stanzas, and which door each stanza opens. A verified request
//! becomes [`Matcher::handle_authorized`] of its door, so its grant opens,
//! extends, persists and closes exactly as a knock door's.

use std::sync::Arc;

use knock_config::Config;
use std::time::Duration;

use knock_core::{DoorId, FlagFilter, Listen, Matcher, Step, Timestamp};
use knock_spa::Verifier;

/// The SPA doors of a configuration.
#[derive(Clone, Debug)]
pub(crate) struct SpaDoors {
    pub(crate) verifier: Verifier,
    /// Per stanza (the verifier's index): the door's name and id.
    pub(crate) doors: Vec<(Arc<str>, Option<DoorId>)>,
    /// The UDP port SPA packets come to.
    pub(crate) port: u16,
    /// When a refusal was last logged as a warning.
    warned_at: Option<Timestamp>,
    /// Warnings not logged since then.
    suppressed: u64,
}

/// At most one refusal warning per this long (the counters count them
/// all): someone replaying a sniffed packet in a loop must not flood the
/// log.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(1);

impl SpaDoors {
    /// The SPA doors of `config` (`None` without any), keeping the replay
    /// cache of `old` (a reload).
    pub(crate) fn new(config: &Config, matcher: &Matcher, old: Option<SpaDoors>) -> Option<Self> {
        let stanzas = config.spa_stanzas();
        if stanzas.is_empty() {
            return None;
        }
        let doors = stanzas
            .iter()
            .map(|(name, _)| (Arc::from(name.as_str()), matcher.door_id(name)))
            .collect();
        let stanzas: Vec<_> = stanzas.into_iter().map(|(_, s)| s).collect();
        let verifier = match old {
            Some(mut o) => {
                o.verifier.set_stanzas(stanzas);
                o.verifier.with_window(config.options.spa_window)
            }
            None => Verifier::new(stanzas).with_window(config.options.spa_window),
        };
        Some(SpaDoors {
            verifier,
            doors,
            port: config.options.spa_port,
            warned_at: None,
            suppressed: 0,
        })
    }

    /// Whether a refusal warning may be logged at `now`: `Some(n)` with the
    /// number of warnings left out since the last one, or `None` (this one
    /// is left out too) within [`WARN_EVERY`] of it.
    pub(crate) fn warn_due(&mut self, now: Timestamp) -> Option<u64> {
        if self
            .warned_at
            .is_some_and(|t| now.saturating_duration_since(t) < WARN_EVERY)
        {
            self.suppressed += 1;
            return None;
        }
        self.warned_at = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }

    /// What the capture must pass: every datagram to the SPA port.
    pub(crate) fn listen(&self) -> Listen {
        Listen::new(Step::udp(self.port), FlagFilter::ANY, None)
    }
}
