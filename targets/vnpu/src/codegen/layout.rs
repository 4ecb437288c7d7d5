//! How a tensor lies in global memory.
//!
//! Tensors on the NPU are f32. On a profile whose graphs are channels-first ([`GraphLayout::Nchw`]) a rank-4
//! tensor (NCHW in the IR) is stored channels-last (NHWC) so that an implicit-GEMM convolution can gather any input
//! pixel's channel vector with one aligned DMA; every other tensor is stored row-major in its logical order. On a
//! channels-last profile ([`GraphLayout::Nhwc`]) every tensor is stored row-major: the graph's NHWC tensors are
//! then exactly what the convolution reads.
//!
//! [`GraphLayout::Nchw`]: crate::profile::GraphLayout::Nchw
//! [`GraphLayout::Nhwc`]: crate::profile::GraphLayout::Nhwc Either way the innermost stored axis is padded to a multiple of the
//! profile's global-memory alignment (the *pitch*), so every row starts at an aligned address. Pads hold
//! unspecified values: kernels never read them into results (elementwise kernels compute on them harmlessly).

use super::round_up;

/// The placement of one f32 tensor's elements in global memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The logical shape (IR order).
    pub shape: Vec<usize>,
    /// Whether the tensor is stored channels-last (rank 4 only).
    pub nhwc: bool,
    /// Elements per stored row (the innermost stored axis, padded).
    pub pitch: usize,
}

impl Layout {
    /// The layout of a tensor of `shape` on a channels-first profile (rank 4 stored channels-last), rows padded to
    /// a multiple of `gran` elements.
    pub fn new(shape: &[usize], gran: u64) -> Layout {
        Layout::with(shape, gran, true)
    }

    /// The layout of a tensor of `shape`, rows padded to a multiple of `gran` elements; `reorder` stores a rank-4
    /// tensor channels-last (its axis 1 innermost), else every tensor is stored in its logical order.
    pub fn with(shape: &[usize], gran: u64, reorder: bool) -> Layout {
        let nhwc = reorder && shape.len() == 4;
        let inner = if nhwc {
            shape[1]
        } else {
            shape.last().copied().unwrap_or(1)
        };
        Layout {
            shape: shape.to_vec(),
            nhwc,
            pitch: round_up(inner.max(1) as u64, gran) as usize,
        }
    }

    /// The logical size of the innermost stored axis (channels for NHWC).
    pub fn inner(&self) -> usize {
        if self.nhwc {
            self.shape[1]
        } else {
            self.shape.last().copied().unwrap_or(1)
        }
    }

    /// The number of stored rows.
    pub fn rows(&self) -> usize {
        let n: usize = self.shape.iter().product();
        n.checked_div(self.inner()).unwrap_or(0)
    }

    /// Stored elements, pads included.
    pub fn physical_len(&self) -> usize {
        self.rows() * self.pitch
    }

    /// Stored bytes.
    pub fn bytes(&self) -> u64 {
        self.physical_len() as u64 * 4
    }

    /// Logical elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The stored index of every logical element, in logical (row-major IR) order.
    fn positions(&self) -> impl Iterator<Item = usize> + '_ {
        let n = self.len();
        (0..n).map(move |i| {
            if self.nhwc {
                let (c, h, w) = (self.shape[1], self.shape[2], self.shape[3]);
                let (b, rest) = (i / (c * h * w), i % (c * h * w));
                let (ch, pix) = (rest / (h * w), rest % (h * w));
                (b * h * w + pix) * self.pitch + ch
            } else {
                let inner = self.inner();
                (i / inner) * self.pitch + i % inner
            }
        })
    }

    /// Whether `other` stores the same number of elements at the same places (a reshape between the two is a
    /// plain copy).
    pub fn same_storage(&self, other: &Layout) -> bool {
        self.len() == other.len()
            && self.physical_len() == other.physical_len()
            && self.positions().eq(other.positions())
    }

    /// Logical data (IR order) → stored data, pads zero.
    pub fn pack(&self, data: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; self.physical_len()];
        for (pos, &v) in self.positions().zip(data) {
            out[pos] = v;
        }
        out
    }

    /// Stored data → logical data (IR order).
    pub fn unpack(&self, stored: &[f32]) -> Vec<f32> {
        self.positions()
            .map(|pos| stored.get(pos).copied().unwrap_or(0.0))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_and_unpack_round_trip_in_both_layouts() {
        for shape in [vec![2, 3, 4, 5], vec![3, 7], vec![5], vec![], vec![2, 1, 3]] {
            let l = Layout::new(&shape, 8);
            let data: Vec<f32> = (0..l.len()).map(|i| i as f32).collect();
            let stored = l.pack(&data);
            assert_eq!(stored.len(), l.physical_len());
            assert_eq!(l.unpack(&stored), data, "{shape:?}");
            assert_eq!(l.pitch % 8, 0);
        }
        // NHWC: element (n=0, c=1, h=0, w=1) lives at pixel 1, channel 1.
        let l = Layout::new(&[1, 3, 2, 2], 4);
        let stored = l.pack(&(0..12).map(|i| i as f32).collect::<Vec<_>>());
        assert_eq!(stored[4 + 1], 5.0);
    }
}
