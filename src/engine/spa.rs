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
    /// Per stanza (the verifier's index): its name and doors.
    pub(crate) doors: Vec<StanzaDoors>,
    /// The UDP port SPA packets come to.
    pub(crate) port: u16,
    /// When a refusal was last logged as a warning.
    warned_at: Option<Timestamp>,
    /// Warnings not logged since then.
    suppressed: u64,
}

/// The doors of one stanza.
#[derive(Clone, Debug)]
pub(crate) struct StanzaDoors {
    /// The stanza's name.
    pub(crate) name: Arc<str>,
    /// Its doors: name, the ports each opens, id (`None`: not loaded).
    doors: Vec<(Arc<str>, Vec<Step>, Option<DoorId>)>,
}

impl StanzaDoors {
    /// The doors a request for `ports` opens: the stanza's single door, or
    /// the door of each port asked for. `Err` names a door not loaded, or
    /// a port no door opens: then none opens (the verifier admits only
    /// the stanza's ports, so this is a fault).
    pub(crate) fn for_ports(&self, ports: &[Step]) -> Result<Vec<(Arc<str>, DoorId)>, String> {
        let loaded = |(name, _, id): &(Arc<str>, Vec<Step>, Option<DoorId>)| {
            id.map(|id| (name.clone(), id))
                .ok_or_else(|| format!("{name}: SPA door not loaded"))
        };
        if let [single] = self.doors.as_slice() {
            if single.1.len() != 1 || ports.iter().all(|p| single.1.contains(p)) {
                return Ok(vec![loaded(single)?]);
            }
        }
        let mut out: Vec<(Arc<str>, DoorId)> = Vec::with_capacity(ports.len());
        for p in ports {
            let d =
                self.doors.iter().find(|d| d.1.contains(p)).ok_or_else(|| {
                    format!("{}: no door opens {}/{}", self.name, p.proto, p.port)
                })?;
            let d = loaded(d)?;
            if !out.iter().any(|o| o.1 == d.1) {
                out.push(d);
            }
        }
        Ok(out)
    }
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
            .map(|s| StanzaDoors {
                name: Arc::from(s.name.as_str()),
                doors: s
                    .doors
                    .iter()
                    .map(|(name, ports)| {
                        (
                            Arc::from(name.as_str()),
                            ports.clone(),
                            matcher.door_id(name),
                        )
                    })
                    .collect(),
            })
            .collect();
        let stanzas: Vec<_> = stanzas.into_iter().map(|s| s.stanza).collect();
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

    /// What the capture must pass: every datagram to the SPA port, with
    /// its data (the SPA packet).
    pub(crate) fn listen(&self) -> Listen {
        Listen::new(Step::udp(self.port), FlagFilter::ANY, None).with_payload()
    }
}
