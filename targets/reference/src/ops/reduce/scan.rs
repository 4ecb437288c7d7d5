//! Cumulative sums and products.

use crate::interp::not_yet_evaluated;

not_yet_evaluated!(CumSum, CumProd);
