//! Reductions, scans, top-k, losses, and signal-processing ops.

use crate::interp::not_yet_evaluated;

not_yet_evaluated!(
    ArgMax,
    ArgMin,
    BlackmanWindow,
    CumProd,
    CumSum,
    DFT,
    Det,
    HammingWindow,
    HannWindow,
    MelWeightMatrix,
    NegativeLogLikelihoodLoss,
    NonMaxSuppression,
    ReduceL1,
    ReduceL2,
    ReduceLogSum,
    ReduceLogSumExp,
    ReduceMax,
    ReduceMean,
    ReduceMin,
    ReduceProd,
    ReduceSum,
    ReduceSumSquare,
    STFT,
    SoftmaxCrossEntropyLoss,
    TopK,
);
