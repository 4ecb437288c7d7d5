//! The static memory plan: offsets of intermediate f32 tensors in one arena, chosen at compile time.
//!
//! Each planned value lives from the step that defines it to the last step that reads it. Values are placed
//! greedily by decreasing size, each at the lowest offset of the tightest gap (best fit) among the already placed
//! values whose lifetimes overlap its own, so two values share memory only when they are never live together.
//!
//! The same planner lays out the arena of a graph with symbolic dims once a run's inputs bind them (sizes then come
//! from the binding): all its arithmetic is checked, so a binding too large to address gives `None`, not a wrap.

/// A value to place: its size and lifetime in steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    /// Size in f32 elements.
    pub len: usize,
    /// The step that writes it.
    pub first: usize,
    /// The last step that reads it (inclusive).
    pub last: usize,
}

/// Offsets are multiples of this many f32s (64 bytes, one cache line).
pub const ALIGN: usize = 16;

/// Offsets (in f32 elements) for every interval, and the arena size in elements; `None` when a size or offset
/// overflows `usize`.
pub fn plan(values: &[Interval]) -> Option<(Vec<usize>, usize)> {
    let aligned = |len: usize| len.div_ceil(ALIGN).checked_mul(ALIGN);
    let sizes: Vec<usize> = values
        .iter()
        .map(|v| aligned(v.len))
        .collect::<Option<_>>()?;
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(values[i].len), values[i].first, i));
    let mut offsets = vec![0usize; values.len()];
    let mut placed: Vec<usize> = Vec::new();
    let mut peak = 0;
    for &i in &order {
        let v = values[i];
        let size = sizes[i];
        // Placed values end at most at `peak`, which is checked below.
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&j| values[j].first <= v.last && v.first <= values[j].last)
            .map(|&j| (offsets[j], offsets[j] + sizes[j]))
            .collect();
        busy.sort_unstable();
        let mut best: Option<(usize, usize)> = None; // (gap size, offset)
        let mut cursor = 0usize;
        for &(s, e) in &busy {
            if s >= cursor.checked_add(size)? && best.is_none_or(|(g, _)| s - cursor < g) {
                best = Some((s - cursor, cursor));
            }
            cursor = cursor.max(e);
        }
        let off = best.map_or(cursor, |(_, o)| o);
        offsets[i] = off;
        peak = peak.max(off.checked_add(size)?);
        placed.push(i);
    }
    Some((offsets, peak))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(len: usize, first: usize, last: usize) -> Interval {
        Interval { len, first, last }
    }

    #[test]
    fn disjoint_lifetimes_share_memory() {
        let (off, peak) = plan(&[iv(32, 0, 1), iv(32, 2, 3)]).unwrap();
        assert_eq!(off, vec![0, 0]);
        assert_eq!(peak, 32);
    }

    #[test]
    fn overlapping_lifetimes_do_not() {
        let vals = [iv(32, 0, 2), iv(16, 1, 3), iv(48, 2, 4), iv(16, 3, 5)];
        let (off, _) = plan(&vals).unwrap();
        for i in 0..vals.len() {
            for j in 0..i {
                let (a, b) = (vals[i], vals[j]);
                if a.first <= b.last && b.first <= a.last {
                    assert!(
                        off[i] + a.len <= off[j] || off[j] + b.len <= off[i],
                        "{i} and {j} overlap"
                    );
                }
            }
        }
    }

    #[test]
    fn sizes_beyond_usize_are_refused() {
        assert_eq!(plan(&[iv(usize::MAX - 3, 0, 1)]), None);
        assert_eq!(
            plan(&[iv(usize::MAX / 2, 0, 1), iv(usize::MAX / 2, 1, 2)]),
            None
        );
        // Disjoint lifetimes share memory, so the same two fit.
        assert!(plan(&[iv(usize::MAX / 4, 0, 1), iv(usize::MAX / 4, 2, 3)]).is_some());
    }
}
