//! Single Packet Authorization in the engine: the verifier of the SPA
//! doors' stanzas, and which door each stanza opens. A verified request
//! becomes [`Matcher::handle_authorized`] of its door, so its grant opens,
//! extends, persists and closes exactly as a knock door's.

use std::sync::Arc;

use knock_config::Config;
use knock_core::{DoorId, FlagFilter, Listen, Matcher, Step};
use knock_spa::Verifier;

/// The SPA doors of a configuration.
#[derive(Clone, Debug)]
pub(crate) struct SpaDoors {
    pub(crate) verifier: Verifier,
    /// Per stanza (the verifier's index): the door's name and id.
    pub(crate) doors: Vec<(Arc<str>, Option<DoorId>)>,
    /// The UDP port SPA packets come to.
    pub(crate) port: u16,
}

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
        })
    }

    /// What the capture must pass: every datagram to the SPA port.
    pub(crate) fn listen(&self) -> Listen {
        Listen::new(Step::udp(self.port), FlagFilter::ANY, None)
    }
}
