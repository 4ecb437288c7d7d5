//! Reductions, scans, top-k, losses, and signal-processing ops.

use super::not_yet_inferred;

not_yet_inferred!(
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
