//! Det.

use crate::interp::not_yet_evaluated;

not_yet_evaluated!(Det);
