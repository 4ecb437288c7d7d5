//! Sequence models: recurrent cells (RNN, GRU, LSTM), attention, rotary embeddings, causal convolution with state.

use super::not_yet_inferred;

not_yet_inferred!(
    Attention,
    CausalConvWithState,
    GRU,
    LSTM,
    LinearAttention,
    RNN,
    RotaryEmbedding,
);
