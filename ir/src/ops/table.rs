//! The op table: every op of the IR, declared once.
//!
//! Each entry names an op and its typed attributes. Field kinds: `def` has a default (the ONNX default), `opt` is
//! `Option<T>`, `req` must be present. The names and defaults follow the newest ONNX opset (28): the importer turns
//! older opset forms into these (attributes that later became inputs are inputs here).
//!
//! The table was first generated from `onnx.defs` schemas; it is maintained by hand from now on. Adding an op here
//! makes the compiler ask for its inference rule, its reference semantics and every target's answer for it.

/// Invokes `$m!` with the whole op table. See the module docs for the grammar.
#[macro_export]
macro_rules! for_each_op {
    ($m:ident) => {
        $m! {
            /// ONNX `Abs` (opset 13).
            Abs {
            }
            /// ONNX `Acos` (opset 22).
            Acos {
            }
            /// ONNX `Acosh` (opset 22).
            Acosh {
            }
            /// ONNX `Add` (opset 14).
            Add {
            }
            /// ONNX `AffineGrid` (opset 20).
            AffineGrid {
                def align_corners: i64 = 0,
            }
            /// ONNX `And` (opset 7).
            And {
            }
            /// ONNX `ArgMax` (opset 13).
            ArgMax {
                def axis: i64 = 0,
                def keepdims: i64 = 1,
                def select_last_index: i64 = 0,
            }
            /// ONNX `ArgMin` (opset 13).
            ArgMin {
                def axis: i64 = 0,
                def keepdims: i64 = 1,
                def select_last_index: i64 = 0,
            }
            /// ONNX `Asin` (opset 22).
            Asin {
            }
            /// ONNX `Asinh` (opset 22).
            Asinh {
            }
            /// ONNX `Atan` (opset 22).
            Atan {
            }
            /// ONNX `Atanh` (opset 22).
            Atanh {
            }
            /// ONNX `Attention` (opset 25).
            Attention {
                def is_causal: i64 = 0,
                opt kv_num_heads: i64,
                def left_window_size: i64 = -1,
                opt q_num_heads: i64,
                def qk_matmul_output_mode: i64 = 0,
                def right_window_size: i64 = -1,
                opt scale: f32,
                def softcap: f32 = 0.0,
                opt softmax_precision: i64,
            }
            /// ONNX `AveragePool` (opset 22).
            AveragePool {
                def auto_pad: String = "NOTSET".to_string(),
                def ceil_mode: i64 = 0,
                def count_include_pad: i64 = 0,
                opt dilations: Vec<i64>,
                req kernel_shape: Vec<i64>,
                opt pads: Vec<i64>,
                opt strides: Vec<i64>,
            }
            /// jiuzhou's own op (not ONNX): AveragePool in the channels-last layout, `X` `[N, spatial.., C]` to
            /// `[N, out_spatial.., C]`: exactly AveragePool on the channels-first transpose, transposed back.
            AveragePoolNhwc {
                def auto_pad: String = "NOTSET".to_string(),
                def ceil_mode: i64 = 0,
                def count_include_pad: i64 = 0,
                opt dilations: Vec<i64>,
                req kernel_shape: Vec<i64>,
                opt pads: Vec<i64>,
                opt strides: Vec<i64>,
            }
            /// ONNX `BatchNormalization` (opset 15).
            BatchNormalization {
                def epsilon: f32 = 1e-5,
                def momentum: f32 = 0.9,
                def training_mode: i64 = 0,
            }
            /// ONNX `Bernoulli` (opset 22).
            Bernoulli {
                opt dtype: i64,
                opt seed: f32,
            }
            /// ONNX `BitCast` (opset 26).
            BitCast {
                req to: i64,
            }
            /// ONNX `BitShift` (opset 28).
            BitShift {
                req direction: String,
            }
            /// ONNX `BitwiseAnd` (opset 18).
            BitwiseAnd {
            }
            /// ONNX `BitwiseNot` (opset 18).
            BitwiseNot {
            }
            /// ONNX `BitwiseOr` (opset 18).
            BitwiseOr {
            }
            /// ONNX `BitwiseXor` (opset 18).
            BitwiseXor {
            }
            /// ONNX `BlackmanWindow` (opset 17).
            BlackmanWindow {
                def output_datatype: i64 = 1,
                def periodic: i64 = 1,
            }
            /// ONNX `Cast` (opset 28).
            Cast {
                def round_mode: String = "up".to_string(),
                def saturate: i64 = 1,
                req to: i64,
            }
            /// ONNX `CastLike` (opset 25).
            CastLike {
                def round_mode: String = "up".to_string(),
                def saturate: i64 = 1,
            }
            /// ONNX `CausalConvWithState` (opset 27).
            CausalConvWithState {
                def activation: String = "none".to_string(),
            }
            /// ONNX `Ceil` (opset 13).
            Ceil {
            }
            /// ONNX `Celu` (opset 28).
            Celu {
                def alpha: f32 = 1.0,
            }
            /// ONNX `CenterCropPad` (opset 18).
            CenterCropPad {
                opt axes: Vec<i64>,
            }
            /// ONNX `Clip` (opset 13).
            Clip {
            }
            /// ONNX `Col2Im` (opset 18).
            Col2Im {
                opt dilations: Vec<i64>,
                opt pads: Vec<i64>,
                opt strides: Vec<i64>,
            }
            /// ONNX `Compress` (opset 28).
            Compress {
                opt axis: i64,
            }
            /// ONNX `Concat` (opset 13).
            Concat {
                req axis: i64,
            }
            /// ONNX `ConcatFromSequence` (opset 11).
            ConcatFromSequence {
                req axis: i64,
                def new_axis: i64 = 0,
            }
            /// ONNX `ConstantOfShape` (opset 25).
            ConstantOfShape {
                opt value: Arc<Tensor>,
            }
            /// ONNX `Conv` (opset 22).
            Conv {
                def auto_pad: String = "NOTSET".to_string(),
                opt dilations: Vec<i64>,
                def group: i64 = 1,
                opt kernel_shape: Vec<i64>,
                opt pads: Vec<i64>,
                opt strides: Vec<i64>,
            }
            /// ONNX `ConvInteger` (opset 10).
            ConvInteger {
                def auto_pad: String = "NOTSET".to_string(),
                opt dilations: Vec<i64>,
                def group: i64 = 1,
                opt kernel_shape: Vec<i64>,
                opt pads: Vec<i64>,
                opt strides: Vec<i64>,
            }
            /// ONNX `ConvTranspose` (opset 22).
            ConvTranspose {
                def auto_pad: String = "NOTSET".to_string(),
                opt dilations: Vec<i64>,
                def group: i64 = 1,
                opt kernel_shape: Vec<i64>,
                opt output_padding: Vec<i64>,
                opt output_shape: Vec<i64>,
                opt pads: Vec<i64>,
                opt strides: Vec<i64>,
            }
            /// ONNX `Cos` (opset 22).
            Cos {
            }
            /// ONNX `Cosh` (opset 22).
            Cosh {
            }
            /// ONNX `CumProd` (opset 26).
            CumProd {
                def exclusive: i64 = 0,
                def reverse: i64 = 0,
            }
            /// ONNX `CumSum` (opset 14).
            CumSum {
                def exclusive: i64 = 0,
                def reverse: i64 = 0,
            }
            /// ONNX `DFT` (opset 20).
            DFT {
                def inverse: i64 = 0,
                def onesided: i64 = 0,
            }
            /// ONNX `DeformConv` (opset 22).
            DeformConv {
                opt dilations: Vec<i64>,
                def group: i64 = 1,
                opt kernel_shape: Vec<i64>,
                def offset_group: i64 = 1,
                opt pads: Vec<i64>,
                opt strides: Vec<i64>,
            }
            /// ONNX `DepthToSpace` (opset 28).
            DepthToSpace {
                req blocksize: i64,
                def mode: String = "DCR".to_string(),
            }
            /// ONNX `DequantizeLinear` (opset 28).
            DequantizeLinear {
                def axis: i64 = 1,
                def block_size: i64 = 0,
                def output_dtype: i64 = 0,
            }
            /// ONNX `Det` (opset 22).
            Det {
            }
            /// ONNX `Div` (opset 14).
            Div {
            }
            /// ONNX `Dropout` (opset 22).
            Dropout {
                opt seed: i64,
            }
            /// ONNX `DynamicQuantizeLinear` (opset 11).
            DynamicQuantizeLinear {
            }
            /// ONNX `Einsum` (opset 28).
            Einsum {
                req equation: String,
            }
            /// ONNX `Elu` (opset 22).
            Elu {
                def alpha: f32 = 1.0,
            }
            /// ONNX `Equal` (opset 19).
            Equal {
            }
            /// ONNX `Erf` (opset 13).
            Erf {
            }
            /// ONNX `Exp` (opset 13).
            Exp {
            }
            /// ONNX `Expand` (opset 13).
            Expand {
            }
            /// ONNX `EyeLike` (opset 22).
            EyeLike {
                opt dtype: i64,
                def k: i64 = 0,
            }
            /// ONNX `Flatten` (opset 25).
            Flatten {
                def axis: i64 = 1,
            }
            /// ONNX `Floor` (opset 13).
            Floor {
            }
            /// jiuzhou's own op (not ONNX): `act(Conv(X, W, B) + Z)`, with `B` (one value per output channel) and
            /// the residual `Z` (broadcast to the output without growing it) optional, and `act` the activation.
            FusedConv {
                def activation: Activation = Activation::None,
                def auto_pad: String = "NOTSET".to_string(),
                opt dilations: Vec<i64>,
                def group: i64 = 1,
                opt kernel_shape: Vec<i64>,
                opt pads: Vec<i64>,
                opt strides: Vec<i64>,
            }
            /// jiuzhou's own op (not ONNX): FusedConv in the channels-last layout. `X` is `[N, spatial.., C]`, `W`
            /// is `[kernel.., C / group, M]` (HWIO), `B` is `[M]`, the residual `Z` broadcasts to the output
            /// `[N, out_spatial.., M]`: exactly FusedConv on the channels-first transposes of `X` and `W`, its result
            /// transposed back to channels-last before `Z` is added and `act` applied.
            FusedConvNhwc {
                def activation: Activation = Activation::None,
                def auto_pad: String = "NOTSET".to_string(),
                opt dilations: Vec<i64>,
                def group: i64 = 1,
                opt kernel_shape: Vec<i64>,
                opt pads: Vec<i64>,
                opt strides: Vec<i64>,
            }
            /// jiuzhou's own op (not ONNX): `act(MatMul(A, B) + bias + Z)`, with `bias` and the residual `Z` optional
            /// (each broadcast to the product without growing it), and `act` the activation.
            FusedMatMul {
                def activation: Activation = Activation::None,
            }
            /// jiuzhou's own op (not ONNX): a chain of elementwise ops as one node, `expr` (a postfix program, see
            /// `ops::expr`) over its inputs with numpy broadcasting; each step is one ONNX elementwise op.
            FusedElementwise {
                req expr: ElementwiseExpr,
            }
            /// ONNX `GRU` (opset 22).
            GRU {
                opt activation_alpha: Vec<f32>,
                opt activation_beta: Vec<f32>,
                opt activations: Vec<String>,
                opt clip: f32,
                def direction: String = "forward".to_string(),
                opt hidden_size: i64,
                def layout: i64 = 0,
                def linear_before_reset: i64 = 0,
            }
            /// ONNX `Gather` (opset 13).
            Gather {
                def axis: i64 = 0,
            }
            /// ONNX `GatherElements` (opset 13).
            GatherElements {
                def axis: i64 = 0,
            }
            /// ONNX `GatherND` (opset 13).
            GatherND {
                def batch_dims: i64 = 0,
            }
            /// ONNX `Gelu` (opset 20).
            Gelu {
                def approximate: String = "none".to_string(),
            }
            /// ONNX `Gemm` (opset 13).
            Gemm {
                def alpha: f32 = 1.0,
                def beta: f32 = 1.0,
                def transA: i64 = 0,
                def transB: i64 = 0,
            }
            /// ONNX `GlobalAveragePool` (opset 22).
            GlobalAveragePool {
            }
            /// ONNX `GlobalLpPool` (opset 22).
            GlobalLpPool {
                def p: i64 = 2,
            }
            /// ONNX `GlobalMaxPool` (opset 22).
            GlobalMaxPool {
            }
            /// ONNX `Greater` (opset 13).
            Greater {
            }
            /// ONNX `GreaterOrEqual` (opset 16).
            GreaterOrEqual {
            }
            /// ONNX `GridSample` (opset 22).
            GridSample {
                def align_corners: i64 = 0,
                def mode: String = "linear".to_string(),
                def padding_mode: String = "zeros".to_string(),
            }
            /// ONNX `GroupNormalization` (opset 21).
            GroupNormalization {
                def epsilon: f32 = 1e-5,
                req num_groups: i64,
                def stash_type: i64 = 1,
            }
            /// ONNX `HammingWindow` (opset 17).
            HammingWindow {
                def output_datatype: i64 = 1,
                def periodic: i64 = 1,
            }
            /// ONNX `HannWindow` (opset 17).
            HannWindow {
                def output_datatype: i64 = 1,
                def periodic: i64 = 1,
            }
            /// ONNX `HardSigmoid` (opset 22).
            HardSigmoid {
                def alpha: f32 = 0.2,
                def beta: f32 = 0.5,
            }
            /// ONNX `HardSwish` (opset 22).
            HardSwish {
            }
            /// ONNX `Hardmax` (opset 13).
            Hardmax {
                def axis: i64 = -1,
            }
            /// ONNX `Identity` (opset 25).
            Identity {
            }
            /// ONNX `If` (opset 25).
            If {
                req else_branch: Arc<Graph>,
                req then_branch: Arc<Graph>,
            }
            /// ONNX `ImageDecoder` (opset 20).
            ImageDecoder {
                def pixel_format: String = "RGB".to_string(),
            }
            /// ONNX `InstanceNormalization` (opset 22).
            InstanceNormalization {
                def epsilon: f32 = 1e-5,
            }
            /// ONNX `IsInf` (opset 20).
            IsInf {
                def detect_negative: i64 = 1,
                def detect_positive: i64 = 1,
            }
            /// ONNX `IsNaN` (opset 20).
            IsNaN {
            }
            /// ONNX `LRN` (opset 13).
            LRN {
                def alpha: f32 = 1e-4,
                def beta: f32 = 0.75,
                def bias: f32 = 1.0,
                req size: i64,
            }
            /// ONNX `LSTM` (opset 22).
            LSTM {
                opt activation_alpha: Vec<f32>,
                opt activation_beta: Vec<f32>,
                opt activations: Vec<String>,
                opt clip: f32,
                def direction: String = "forward".to_string(),
                opt hidden_size: i64,
                def input_forget: i64 = 0,
                def layout: i64 = 0,
            }
            /// ONNX `LayerNormalization` (opset 17).
            LayerNormalization {
                def axis: i64 = -1,
                def epsilon: f32 = 1e-5,
                def stash_type: i64 = 1,
            }
            /// ONNX `LeakyRelu` (opset 16).
            LeakyRelu {
                def alpha: f32 = 0.01,
            }
            /// ONNX `Less` (opset 13).
            Less {
            }
            /// ONNX `LessOrEqual` (opset 16).
            LessOrEqual {
            }
            /// ONNX `LinearAttention` (opset 27).
            LinearAttention {
                def chunk_size: i64 = 64,
                req kv_num_heads: i64,
                req q_num_heads: i64,
                def scale: f32 = 0.0,
                def update_rule: String = "gated_delta".to_string(),
            }
            /// ONNX `Log` (opset 13).
            Log {
            }
            /// ONNX `LogSoftmax` (opset 13).
            LogSoftmax {
                def axis: i64 = -1,
            }
            /// ONNX `Loop` (opset 25).
            Loop {
                req body: Arc<Graph>,
            }
            /// ONNX `LpNormalization` (opset 22).
            LpNormalization {
                def axis: i64 = -1,
                def p: i64 = 2,
            }
            /// ONNX `LpPool` (opset 22).
            LpPool {
                def auto_pad: String = "NOTSET".to_string(),
                def ceil_mode: i64 = 0,
                opt dilations: Vec<i64>,
                req kernel_shape: Vec<i64>,
                def p: i64 = 2,
                opt pads: Vec<i64>,
                opt strides: Vec<i64>,
            }
            /// ONNX `MatMul` (opset 13).
            MatMul {
            }
            /// ONNX `MatMulInteger` (opset 10).
            MatMulInteger {
            }
            /// ONNX `Max` (opset 13).
            Max {
            }
            /// ONNX `MaxPool` (opset 22).
            MaxPool {
                def auto_pad: String = "NOTSET".to_string(),
                def ceil_mode: i64 = 0,
                opt dilations: Vec<i64>,
                req kernel_shape: Vec<i64>,
                opt pads: Vec<i64>,
                def storage_order: i64 = 0,
                opt strides: Vec<i64>,
            }
            /// jiuzhou's own op (not ONNX): MaxPool (values only) in the channels-last layout, `X`
            /// `[N, spatial.., C]` to `[N, out_spatial.., C]`: exactly MaxPool on the channels-first transpose,
            /// transposed back.
            MaxPoolNhwc {
                def auto_pad: String = "NOTSET".to_string(),
                def ceil_mode: i64 = 0,
                opt dilations: Vec<i64>,
                req kernel_shape: Vec<i64>,
                opt pads: Vec<i64>,
                opt strides: Vec<i64>,
            }
            /// ONNX `MaxRoiPool` (opset 22).
            MaxRoiPool {
                req pooled_shape: Vec<i64>,
                def spatial_scale: f32 = 1.0,
            }
            /// ONNX `MaxUnpool` (opset 22).
            MaxUnpool {
                req kernel_shape: Vec<i64>,
                opt pads: Vec<i64>,
                opt strides: Vec<i64>,
            }
            /// ONNX `Mean` (opset 13).
            Mean {
            }
            /// ONNX `MeanVarianceNormalization` (opset 13).
            MeanVarianceNormalization {
                def axes: Vec<i64> = vec![0, 2, 3],
            }
            /// ONNX `MelWeightMatrix` (opset 17).
            MelWeightMatrix {
                def output_datatype: i64 = 1,
            }
            /// ONNX `Min` (opset 13).
            Min {
            }
            /// ONNX `Mish` (opset 22).
            Mish {
            }
            /// ONNX `Mod` (opset 28).
            Mod {
                def fmod: i64 = 0,
            }
            /// ONNX `Mul` (opset 14).
            Mul {
            }
            /// ONNX `Multinomial` (opset 22).
            Multinomial {
                def dtype: i64 = 6,
                def sample_size: i64 = 1,
                opt seed: f32,
            }
            /// ONNX `Neg` (opset 13).
            Neg {
            }
            /// ONNX `NegativeLogLikelihoodLoss` (opset 22).
            NegativeLogLikelihoodLoss {
                opt ignore_index: i64,
                def reduction: String = "mean".to_string(),
            }
            /// ONNX `NonMaxSuppression` (opset 11).
            NonMaxSuppression {
                def center_point_box: i64 = 0,
            }
            /// ONNX `NonZero` (opset 13).
            NonZero {
            }
            /// ONNX `Not` (opset 1).
            Not {
            }
            /// ONNX `OneHot` (opset 28).
            OneHot {
                def axis: i64 = -1,
            }
            /// ONNX `Optional` (opset 28).
            Optional {
                opt r#type: ValueType,
            }
            /// ONNX `OptionalGetElement` (opset 28).
            OptionalGetElement {
            }
            /// ONNX `OptionalHasElement` (opset 28).
            OptionalHasElement {
            }
            /// ONNX `Or` (opset 7).
            Or {
            }
            /// ONNX `PRelu` (opset 16).
            PRelu {
            }
            /// ONNX `Pad` (opset 25).
            Pad {
                def mode: String = "constant".to_string(),
            }
            /// ONNX `Pow` (opset 15).
            Pow {
            }
            /// ONNX `QLinearConv` (opset 10).
            QLinearConv {
                def auto_pad: String = "NOTSET".to_string(),
                opt dilations: Vec<i64>,
                def group: i64 = 1,
                opt kernel_shape: Vec<i64>,
                opt pads: Vec<i64>,
                opt strides: Vec<i64>,
            }
            /// ONNX `QLinearMatMul` (opset 21).
            QLinearMatMul {
            }
            /// ONNX `QuantizeLinear` (opset 28).
            QuantizeLinear {
                def axis: i64 = 1,
                def block_size: i64 = 0,
                def output_dtype: i64 = 0,
                def precision: i64 = 0,
                def saturate: i64 = 1,
            }
            /// ONNX `RMSNormalization` (opset 23).
            RMSNormalization {
                def axis: i64 = -1,
                def epsilon: f32 = 1e-5,
                def stash_type: i64 = 1,
            }
            /// ONNX `RNN` (opset 22).
            RNN {
                opt activation_alpha: Vec<f32>,
                opt activation_beta: Vec<f32>,
                def activations: Vec<String> = vec!["Tanh".to_string(), "Tanh".to_string()],
                opt clip: f32,
                def direction: String = "forward".to_string(),
                opt hidden_size: i64,
                def layout: i64 = 0,
            }
            /// ONNX `RandomNormal` (opset 22).
            RandomNormal {
                def dtype: i64 = 1,
                def mean: f32 = 0.0,
                def scale: f32 = 1.0,
                opt seed: f32,
                req shape: Vec<i64>,
            }
            /// ONNX `RandomNormalLike` (opset 22).
            RandomNormalLike {
                opt dtype: i64,
                def mean: f32 = 0.0,
                def scale: f32 = 1.0,
                opt seed: f32,
            }
            /// ONNX `RandomUniform` (opset 22).
            RandomUniform {
                def dtype: i64 = 1,
                def high: f32 = 1.0,
                def low: f32 = 0.0,
                opt seed: f32,
                req shape: Vec<i64>,
            }
            /// ONNX `RandomUniformLike` (opset 22).
            RandomUniformLike {
                opt dtype: i64,
                def high: f32 = 1.0,
                def low: f32 = 0.0,
                opt seed: f32,
            }
            /// ONNX `Range` (opset 27).
            Range {
                def stash_type: i64 = 1,
            }
            /// ONNX `Reciprocal` (opset 13).
            Reciprocal {
            }
            /// ONNX `ReduceL1` (opset 18).
            ReduceL1 {
                def keepdims: i64 = 1,
                def noop_with_empty_axes: i64 = 0,
            }
            /// ONNX `ReduceL2` (opset 18).
            ReduceL2 {
                def keepdims: i64 = 1,
                def noop_with_empty_axes: i64 = 0,
            }
            /// ONNX `ReduceLogSum` (opset 28).
            ReduceLogSum {
                def keepdims: i64 = 1,
                def noop_with_empty_axes: i64 = 0,
            }
            /// ONNX `ReduceLogSumExp` (opset 28).
            ReduceLogSumExp {
                def keepdims: i64 = 1,
                def noop_with_empty_axes: i64 = 0,
            }
            /// ONNX `ReduceMax` (opset 20).
            ReduceMax {
                def keepdims: i64 = 1,
                def noop_with_empty_axes: i64 = 0,
            }
            /// ONNX `ReduceMean` (opset 18).
            ReduceMean {
                def keepdims: i64 = 1,
                def noop_with_empty_axes: i64 = 0,
            }
            /// ONNX `ReduceMin` (opset 20).
            ReduceMin {
                def keepdims: i64 = 1,
                def noop_with_empty_axes: i64 = 0,
            }
            /// ONNX `ReduceProd` (opset 18).
            ReduceProd {
                def keepdims: i64 = 1,
                def noop_with_empty_axes: i64 = 0,
            }
            /// ONNX `ReduceSum` (opset 13).
            ReduceSum {
                def keepdims: i64 = 1,
                def noop_with_empty_axes: i64 = 0,
            }
            /// ONNX `ReduceSumSquare` (opset 18).
            ReduceSumSquare {
                def keepdims: i64 = 1,
                def noop_with_empty_axes: i64 = 0,
            }
            /// ONNX `RegexFullMatch` (opset 20).
            RegexFullMatch {
                opt pattern: String,
            }
            /// ONNX `Relu` (opset 14).
            Relu {
            }
            /// ONNX `Reshape` (opset 25).
            Reshape {
                def allowzero: i64 = 0,
            }
            /// ONNX `Resize` (opset 19).
            Resize {
                def antialias: i64 = 0,
                opt axes: Vec<i64>,
                def coordinate_transformation_mode: String = "half_pixel".to_string(),
                def cubic_coeff_a: f32 = -0.75,
                def exclude_outside: i64 = 0,
                def extrapolation_value: f32 = 0.0,
                def keep_aspect_ratio_policy: String = "stretch".to_string(),
                def mode: String = "nearest".to_string(),
                def nearest_mode: String = "round_prefer_floor".to_string(),
            }
            /// ONNX `ReverseSequence` (opset 28).
            ReverseSequence {
                def batch_axis: i64 = 1,
                def time_axis: i64 = 0,
            }
            /// ONNX `RoiAlign` (opset 22).
            RoiAlign {
                def coordinate_transformation_mode: String = "half_pixel".to_string(),
                def mode: String = "avg".to_string(),
                def output_height: i64 = 1,
                def output_width: i64 = 1,
                def sampling_ratio: i64 = 0,
                def spatial_scale: f32 = 1.0,
            }
            /// ONNX `RotaryEmbedding` (opset 23).
            RotaryEmbedding {
                def interleaved: i64 = 0,
                opt num_heads: i64,
                def rotary_embedding_dim: i64 = 0,
            }
            /// ONNX `Round` (opset 22).
            Round {
            }
            /// ONNX `STFT` (opset 17).
            STFT {
                def onesided: i64 = 1,
            }
            /// ONNX `Scan` (opset 25).
            Scan {
                req body: Arc<Graph>,
                req num_scan_inputs: i64,
                opt scan_input_axes: Vec<i64>,
                opt scan_input_directions: Vec<i64>,
                opt scan_output_axes: Vec<i64>,
                opt scan_output_directions: Vec<i64>,
            }
            /// ONNX `ScatterElements` (opset 18).
            ScatterElements {
                def axis: i64 = 0,
                def reduction: String = "none".to_string(),
            }
            /// ONNX `ScatterND` (opset 18).
            ScatterND {
                def reduction: String = "none".to_string(),
            }
            /// ONNX `Selu` (opset 22).
            Selu {
                def alpha: f32 = 1.673_263_2,
                def gamma: f32 = 1.050_701,
            }
            /// ONNX `SequenceAt` (opset 11).
            SequenceAt {
            }
            /// ONNX `SequenceConstruct` (opset 11).
            SequenceConstruct {
            }
            /// ONNX `SequenceEmpty` (opset 11).
            SequenceEmpty {
                opt dtype: i64,
            }
            /// ONNX `SequenceErase` (opset 11).
            SequenceErase {
            }
            /// ONNX `SequenceInsert` (opset 11).
            SequenceInsert {
            }
            /// ONNX `SequenceLength` (opset 11).
            SequenceLength {
            }
            /// ONNX `SequenceMap` (opset 17).
            SequenceMap {
                req body: Arc<Graph>,
            }
            /// ONNX `Shape` (opset 25).
            Shape {
                opt end: i64,
                def start: i64 = 0,
            }
            /// ONNX `Shrink` (opset 9).
            Shrink {
                def bias: f32 = 0.0,
                def lambd: f32 = 0.5,
            }
            /// ONNX `Sigmoid` (opset 13).
            Sigmoid {
            }
            /// ONNX `Sign` (opset 13).
            Sign {
            }
            /// ONNX `Sin` (opset 22).
            Sin {
            }
            /// ONNX `Sinh` (opset 22).
            Sinh {
            }
            /// ONNX `Size` (opset 25).
            Size {
            }
            /// ONNX `Slice` (opset 13).
            Slice {
            }
            /// ONNX `Softmax` (opset 13).
            Softmax {
                def axis: i64 = -1,
            }
            /// ONNX `SoftmaxCrossEntropyLoss` (opset 13).
            SoftmaxCrossEntropyLoss {
                opt ignore_index: i64,
                def reduction: String = "mean".to_string(),
            }
            /// ONNX `Softplus` (opset 22).
            Softplus {
            }
            /// ONNX `Softsign` (opset 22).
            Softsign {
            }
            /// ONNX `SpaceToDepth` (opset 28).
            SpaceToDepth {
                req blocksize: i64,
                def mode: String = "DCR".to_string(),
            }
            /// ONNX `Split` (opset 18).
            Split {
                def axis: i64 = 0,
                opt num_outputs: i64,
            }
            /// ONNX `SplitToSequence` (opset 24).
            SplitToSequence {
                def axis: i64 = 0,
                def keepdims: i64 = 1,
            }
            /// ONNX `Sqrt` (opset 13).
            Sqrt {
            }
            /// ONNX `Squeeze` (opset 25).
            Squeeze {
            }
            /// ONNX `StringConcat` (opset 20).
            StringConcat {
            }
            /// ONNX `StringNormalizer` (opset 10).
            StringNormalizer {
                def case_change_action: String = "NONE".to_string(),
                def is_case_sensitive: i64 = 0,
                opt locale: String,
                opt stopwords: Vec<String>,
            }
            /// ONNX `StringSplit` (opset 20).
            StringSplit {
                opt delimiter: String,
                opt maxsplit: i64,
            }
            /// ONNX `Sub` (opset 14).
            Sub {
            }
            /// ONNX `Sum` (opset 13).
            Sum {
            }
            /// ONNX `SwiGLU` (opset 28).
            SwiGLU {
                def alpha: f32 = 1.0,
            }
            /// ONNX `Swish` (opset 24).
            Swish {
                def alpha: f32 = 1.0,
            }
            /// ONNX `Tan` (opset 22).
            Tan {
            }
            /// ONNX `Tanh` (opset 13).
            Tanh {
            }
            /// ONNX `TensorScatter` (opset 24).
            TensorScatter {
                def axis: i64 = -2,
                def mode: String = "linear".to_string(),
            }
            /// ONNX `TfIdfVectorizer` (opset 9).
            TfIdfVectorizer {
                req max_gram_length: i64,
                req max_skip_count: i64,
                req min_gram_length: i64,
                req mode: String,
                req ngram_counts: Vec<i64>,
                req ngram_indexes: Vec<i64>,
                opt pool_int64s: Vec<i64>,
                opt pool_strings: Vec<String>,
                opt weights: Vec<f32>,
            }
            /// ONNX `ThresholdedRelu` (opset 22).
            ThresholdedRelu {
                def alpha: f32 = 1.0,
            }
            /// ONNX `Tile` (opset 13).
            Tile {
            }
            /// ONNX `TopK` (opset 24).
            TopK {
                def axis: i64 = -1,
                def largest: i64 = 1,
                def sorted: i64 = 1,
            }
            /// ONNX `Transpose` (opset 25).
            Transpose {
                opt perm: Vec<i64>,
            }
            /// ONNX `Trilu` (opset 14).
            Trilu {
                def upper: i64 = 1,
            }
            /// ONNX `Unique` (opset 28).
            Unique {
                opt axis: i64,
                def sorted: i64 = 1,
            }
            /// ONNX `Unsqueeze` (opset 25).
            Unsqueeze {
            }
            /// ONNX `Where` (opset 16).
            Where {
            }
            /// ONNX `Xor` (opset 7).
            Xor {
            }
        }
    };
}
