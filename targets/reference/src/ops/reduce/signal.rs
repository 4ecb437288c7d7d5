//! Signal processing.

use crate::interp::not_yet_evaluated;

not_yet_evaluated!(DFT, STFT, HannWindow, HammingWindow, BlackmanWindow, MelWeightMatrix);
