//! Image and geometry ops: resize, grid sampling, ROI pooling and alignment, affine grids, deformable convolution, unpooling.

use crate::interp::not_yet_evaluated;

not_yet_evaluated!(
    AffineGrid, DeformConv, GridSample, MaxRoiPool, MaxUnpool, Resize, RoiAlign,
);
