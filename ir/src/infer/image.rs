//! Image and geometry ops: resize, grid sampling, ROI pooling and alignment, affine grids, deformable convolution, unpooling.

use super::not_yet_inferred;

not_yet_inferred!(
    AffineGrid, DeformConv, GridSample, MaxRoiPool, MaxUnpool, Resize, RoiAlign,
);
