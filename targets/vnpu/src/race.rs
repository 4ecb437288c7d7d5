//! Race detection: vector clocks over the four engine queues and a log of recent accesses per memory.
//!
//! Every executed instruction advances its engine's own clock component and is stamped with the resulting
//! *epoch*. `set_flag` snapshots the setter's clock; the matching `wait_flag` joins that snapshot into the waiter's
//! clock; `barrier` joins all clocks. An earlier access by engine `E` at epoch `t` happens before the current
//! instruction exactly when the current engine's clock has `clock[E] ≥ t`. Two accesses to overlapping bytes of
//! one memory, from different engines, at least one a write, neither happening before the other, are a race.
//! Accesses of one engine are ordered by its queue and never race with each other.
//!
//! The log keeps, per memory, the exact byte intervals of every access that some engine with instructions still
//! to run could race with; an access every such engine already knows about is dropped.

use std::collections::HashMap;

use crate::isa::Engine;

/// A vector clock: one component per engine in [`Engine::ALL`] order.
pub(crate) type Clock = [u64; 4];

/// Sorted, merged, half-open byte intervals.
pub(crate) type Runs = Vec<(u64, u64)>;

/// One logged access.
#[derive(Debug, Clone)]
struct Rec {
    engine: usize,
    epoch: u64,
    index: usize,
    write: bool,
    lo: u64,
    hi: u64,
    runs: Runs,
}

/// A detected race: the overlapping bytes and the earlier, unordered access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Conflict {
    pub start: u64,
    pub end: u64,
    pub other_index: usize,
    pub other_engine: Engine,
    pub other_write: bool,
}

/// The access log of every memory.
#[derive(Debug, Default)]
pub(crate) struct Shadow {
    logs: HashMap<String, Vec<Rec>>,
    len: usize,
    prune_at: usize,
}

/// The first overlap between two sorted interval lists.
fn overlap(a: &Runs, b: &Runs) -> Option<(u64, u64)> {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (lo, hi) = (a[i].0.max(b[j].0), a[i].1.min(b[j].1));
        if lo < hi {
            return Some((lo, hi));
        }
        if a[i].1 <= b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    None
}

impl Shadow {
    /// Checks an access by `engine` (with clock `clock`) against the log.
    pub fn check(
        &self,
        mem: &str,
        runs: &Runs,
        write: bool,
        engine: usize,
        clock: &Clock,
    ) -> Option<Conflict> {
        let (lo, hi) = bounds(runs)?;
        for rec in self.logs.get(mem)? {
            if rec.engine == engine || !(write || rec.write) || clock[rec.engine] >= rec.epoch {
                continue;
            }
            if rec.hi <= lo || hi <= rec.lo {
                continue;
            }
            if let Some((start, end)) = overlap(&rec.runs, runs) {
                return Some(Conflict {
                    start,
                    end,
                    other_index: rec.index,
                    other_engine: Engine::ALL[rec.engine],
                    other_write: rec.write,
                });
            }
        }
        None
    }

    /// Logs an access (after every access of the instruction was checked).
    pub fn record(
        &mut self,
        mem: &str,
        runs: Runs,
        write: bool,
        engine: usize,
        epoch: u64,
        index: usize,
    ) {
        let Some((lo, hi)) = bounds(&runs) else {
            return;
        };
        let log = self.logs.entry(mem.to_string()).or_default();
        // An older access of the same engine inside this one's bytes adds nothing when this one writes, or when
        // both read: whatever would race with the old one races with this one, which is later in the same queue.
        log.retain(|r| !(r.engine == engine && (write || !r.write) && covers(&runs, &r.runs)));
        log.push(Rec {
            engine,
            epoch,
            index,
            write,
            lo,
            hi,
            runs,
        });
        self.len = self.logs.values().map(Vec::len).sum();
    }

    /// Drops accesses that every engine still running already happens after. `clocks[f]` is engine `f`'s clock,
    /// `running[f]` whether it has instructions left.
    pub fn prune(&mut self, clocks: &[Clock; 4], running: &[bool; 4]) {
        if self.len < self.prune_at {
            return;
        }
        for log in self.logs.values_mut() {
            log.retain(|r| {
                (0..4).any(|f| f != r.engine && running[f] && clocks[f][r.engine] < r.epoch)
            });
        }
        self.len = self.logs.values().map(Vec::len).sum();
        self.prune_at = 2 * self.len + 64;
    }

    /// Forgets everything (after a barrier every earlier access is ordered before every later one).
    pub fn clear(&mut self) {
        self.logs.clear();
        self.len = 0;
    }
}

fn bounds(runs: &Runs) -> Option<(u64, u64)> {
    Some((runs.first()?.0, runs.last()?.1))
}

/// Whether `outer` covers every byte of `inner` (both sorted and merged, so one forward walk suffices).
fn covers(outer: &Runs, inner: &Runs) -> bool {
    let mut j = 0;
    for &(lo, hi) in inner {
        while j < outer.len() && outer[j].1 < hi {
            j += 1;
        }
        match outer.get(j) {
            Some(&(a, b)) if a <= lo && hi <= b => {}
            _ => return false,
        }
    }
    true
}

/// Joins `other` into `clock` (componentwise maximum).
pub(crate) fn join(clock: &mut Clock, other: &Clock) {
    for (c, o) in clock.iter_mut().zip(other) {
        *c = (*c).max(*o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_finds_the_first_shared_bytes() {
        assert_eq!(
            overlap(&vec![(0, 4), (8, 12)], &vec![(4, 8), (10, 20)]),
            Some((10, 12))
        );
        assert_eq!(
            overlap(&vec![(0, 4), (8, 12)], &vec![(4, 8), (12, 20)]),
            None
        );
    }

    #[test]
    fn covers_walks_both_lists() {
        assert!(covers(
            &vec![(0, 10), (20, 30)],
            &vec![(0, 4), (5, 10), (22, 30)]
        ));
        assert!(!covers(&vec![(0, 10), (20, 30)], &vec![(8, 12)]));
        assert!(!covers(&vec![(0, 10)], &vec![(2, 4), (40, 41)]));
        assert!(covers(&vec![(0, 10)], &vec![]));
    }

    #[test]
    fn ordering_by_clock_suppresses_the_race() {
        let mut s = Shadow::default();
        s.record("UB", vec![(0, 64)], true, 0, 1, 0);
        let unordered = [0, 0, 1, 0];
        let ordered = [1, 0, 1, 0];
        let hit = s
            .check("UB", &vec![(32, 96)], false, 2, &unordered)
            .unwrap();
        assert_eq!(
            (hit.start, hit.end, hit.other_index, hit.other_write),
            (32, 64, 0, true)
        );
        assert_eq!(s.check("UB", &vec![(32, 96)], false, 2, &ordered), None);
        assert_eq!(s.check("UB", &vec![(64, 96)], true, 2, &unordered), None);
        assert_eq!(s.check("L0A", &vec![(0, 96)], true, 2, &unordered), None);
        // Once every running engine knows the write, it is dropped.
        s.prune(
            &[[1, 0, 0, 0], [0; 4], [1, 0, 1, 0], [0; 4]],
            &[true, false, true, false],
        );
        assert!(s.logs.values().all(Vec::is_empty));
    }
}
