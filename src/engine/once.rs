//! One-time sequences the engine has seen used: never accepted again.
//!
//! knockd records a used one-time sequence only by writing `#` over its
//! line; if that write fails (a read-only or full filesystem), the line is
//! read again as unused at the next reload or restart and opens once more.
//! The engine keeps its own record, owned here, which goes into the
//! [`Snapshot`](super::Snapshot) before the door opens: a door's list is
//! always built without the sequences recorded for it. An entry is dropped
//! once the door's file no longer lists the sequence as unused (the mark
//! made it, or the operator removed the line), so the record is bounded by
//! the files.

use std::collections::{BTreeMap, BTreeSet};

use knock_core::{Door, Sequences, Step};

use super::snapshot::SavedSequences;

/// Used one-time sequences, by door name.
#[derive(Clone, Debug, Default)]
pub(crate) struct UsedOnce {
    by_door: BTreeMap<String, BTreeSet<Vec<Step>>>,
}

impl UsedOnce {
    /// Records that `door` consumed `steps`.
    pub(crate) fn record(&mut self, door: &str, steps: Vec<Step>) {
        self.by_door
            .entry(door.to_owned())
            .or_default()
            .insert(steps);
    }

    /// `doors` with every recorded sequence taken out of the one-time lists;
    /// a one-time door left without a sequence is left out, as one whose
    /// file has only used lines.
    pub(crate) fn filter(&self, doors: &[Door]) -> Vec<Door> {
        doors
            .iter()
            .filter_map(|d| {
                let used = self.by_door.get(&d.name);
                let mut d = d.clone();
                if let (Sequences::OneTime { list, next }, Some(used)) = (&mut d.sequences, used) {
                    list.retain(|s| !used.contains(s));
                    *next = 0;
                    if list.is_empty() {
                        return None;
                    }
                }
                Some(d)
            })
            .collect()
    }

    /// Forgets what `doors` (as the files list them now) no longer offer:
    /// sequences their file marked or lost, doors gone or no longer one-time.
    pub(crate) fn prune(&mut self, doors: &[Door]) {
        self.by_door.retain(|name, used| {
            let listed = doors
                .iter()
                .find(|d| &d.name == name)
                .and_then(|d| match &d.sequences {
                    Sequences::OneTime { list, .. } => Some(list),
                    _ => None,
                });
            match listed {
                Some(list) => used.retain(|s| list.contains(s)),
                None => used.clear(),
            }
            !used.is_empty()
        });
    }

    /// Every recorded sequence, by door (after [`prune`](Self::prune): those
    /// whose file still lists them as unused, whose mark is owed).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &Vec<Step>)> {
        self.by_door
            .iter()
            .flat_map(|(door, used)| used.iter().map(move |s| (door.as_str(), s)))
    }

    /// The record as the snapshot keeps it.
    pub(crate) fn saved(&self) -> Vec<SavedSequences> {
        self.by_door
            .iter()
            .map(|(door, used)| SavedSequences {
                door: door.clone(),
                sequences: used
                    .iter()
                    .map(|s| knock_config::sequence_to_string(s))
                    .collect(),
            })
            .collect()
    }

    /// Adds what a snapshot recorded. Returns the entries that do not parse
    /// (`door: text`), which are skipped.
    pub(crate) fn restore(&mut self, saved: &[SavedSequences]) -> Vec<String> {
        let mut bad = Vec::new();
        for s in saved {
            for text in &s.sequences {
                let steps: Result<Vec<Step>, _> =
                    text.split(',').map(knock_config::parse_step).collect();
                match steps {
                    Ok(steps) if !steps.is_empty() => self.record(&s.door, steps),
                    _ => bad.push(format!("{}: {text:?}", s.door)),
                }
            }
        }
        bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn once(name: &str, list: &[&[u16]]) -> Door {
        Door::one_time(
            name,
            list.iter()
                .map(|s| s.iter().map(|&p| Step::tcp(p)).collect())
                .collect(),
        )
    }

    #[test]
    fn filter_prune_and_round_trip() {
        let doors = vec![once("a", &[&[1, 2], &[3, 4]]), once("b", &[&[5]])];
        let mut u = UsedOnce::default();
        u.record("a", vec![Step::tcp(1), Step::tcp(2)]);
        u.record("b", vec![Step::tcp(5)]);
        let f = u.filter(&doors);
        assert_eq!(f.len(), 1, "b has nothing left");
        assert!(matches!(&f[0].sequences, Sequences::OneTime { list, next: 0 } if list.len() == 1));

        let mut back = UsedOnce::default();
        assert!(back.restore(&u.saved()).is_empty());
        assert_eq!(back.iter().count(), 2);

        // The file marked a's line: a's entry goes, b's stays (still listed).
        back.prune(&[once("a", &[&[3, 4]]), once("b", &[&[5]])]);
        assert_eq!(
            back.iter().collect::<Vec<_>>(),
            vec![("b", &vec![Step::tcp(5)])]
        );
        back.prune(&[]);
        assert_eq!(back.iter().count(), 0);
    }

    #[test]
    fn bad_saved_entries_are_reported_not_fatal() {
        let mut u = UsedOnce::default();
        let bad = u.restore(&[SavedSequences {
            door: "a".into(),
            sequences: vec!["1,x".into(), "".into(), "7:udp".into()],
        }]);
        assert_eq!(bad.len(), 2);
        assert_eq!(u.iter().count(), 1);
    }
}
