//! Sequence models: recurrent cells (RNN, GRU, LSTM), attention, rotary embeddings, causal convolution with state.

use crate::interp::not_yet_evaluated;

not_yet_evaluated!(
    Attention,
    CausalConvWithState,
    GRU,
    LSTM,
    LinearAttention,
    RNN,
    RotaryEmbedding,
);
