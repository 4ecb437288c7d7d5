//! Inference tests for the neural-network ops: small graphs, known and symbolic dims.

use crate::infer::test_util::infer_types;
use crate::ops::*;
use crate::{DType, Dim, Op, TensorType};

/// Infers `op` on inputs of the given types and prints the output types.
fn check(op: impl Into<Op>, inputs: &[Option<TensorType>], num_outputs: usize) -> String {
    infer_types(op, inputs, &[], num_outputs)
}

fn t(dtype: DType, dims: &[&str]) -> Option<TensorType> {
    Some(TensorType::new(
        dtype,
        dims.iter().map(|d| match d.parse::<usize>() {
            Ok(n) => Dim::Known(n),
            Err(_) => Dim::Sym(d.to_string()),
        }),
    ))
}

fn f32(dims: &[&str]) -> Option<TensorType> {
    t(DType::F32, dims)
}

#[test]
fn conv_shapes() {
    let conv = Conv {
        strides: Some(vec![2, 2]),
        pads: Some(vec![3, 3, 3, 3]),
        ..Default::default()
    };
    assert_eq!(
        check(
            conv.clone(),
            &[f32(&["N", "3", "224", "224"]), f32(&["64", "3", "7", "7"])],
            1
        ),
        "f32[N,64,112,112]"
    );
    assert_eq!(
        check(
            conv,
            &[f32(&["N", "3", "H", "W"]), f32(&["64", "3", "7", "7"])],
            1
        ),
        "f32[N,64,spatial_0,spatial_1]"
    );
    let same = Conv {
        auto_pad: "SAME_UPPER".into(),
        ..Default::default()
    };
    assert_eq!(
        check(
            same,
            &[f32(&["1", "2", "H", "5"]), f32(&["4", "2", "3", "3"])],
            1
        ),
        "f32[1,4,H,5]"
    );
    let conv1d = Conv {
        dilations: Some(vec![2]),
        ..Default::default()
    };
    assert_eq!(
        check(conv1d, &[f32(&["1", "2", "9"]), f32(&["4", "2", "3"])], 1),
        "f32[1,4,5]"
    );
    assert_eq!(
        check(
            Conv::default(),
            &[f32(&["1", "2", "2"]), f32(&["4", "2", "3"])],
            1
        ),
        "error: spatial axis 0: padded input size 2 is smaller than the kernel extent 3"
    );
    assert_eq!(
        check(
            ConvInteger::default(),
            &[
                t(DType::U8, &["1", "1", "3", "3"]),
                t(DType::U8, &["1", "1", "2", "2"])
            ],
            1
        ),
        "i32[1,1,2,2]"
    );
}

#[test]
fn conv_transpose_shapes() {
    let op = ConvTranspose {
        strides: Some(vec![3, 2]),
        output_padding: Some(vec![1, 1]),
        ..Default::default()
    };
    assert_eq!(
        check(
            op,
            &[f32(&["1", "1", "3", "3"]), f32(&["1", "2", "3", "3"])],
            1
        ),
        "f32[1,2,10,8]"
    );
    let op = ConvTranspose {
        group: 2,
        ..Default::default()
    };
    assert_eq!(
        check(
            op,
            &[f32(&["1", "2", "3", "3"]), f32(&["2", "1", "3", "3"])],
            1
        ),
        "f32[1,2,5,5]"
    );
}

#[test]
fn pool_shapes() {
    let op = MaxPool {
        kernel_shape: vec![3, 3],
        strides: Some(vec![2, 2]),
        pads: Some(vec![1, 1, 1, 1]),
        ..Default::default()
    };
    assert_eq!(
        check(op, &[f32(&["N", "64", "112", "112"])], 2),
        "f32[N,64,56,56], i64[N,64,56,56]"
    );
    let op = AveragePool {
        kernel_shape: vec![3, 3],
        strides: Some(vec![2, 2]),
        ceil_mode: 1,
        ..Default::default()
    };
    assert_eq!(check(op, &[f32(&["1", "1", "4", "4"])], 1), "f32[1,1,2,2]");
    assert_eq!(
        check(
            GlobalAveragePool::default(),
            &[f32(&["N", "C", "7", "7"])],
            1
        ),
        "f32[N,C,1,1]"
    );
}

#[test]
fn matmul_shapes() {
    assert_eq!(
        check(
            MatMul::default(),
            &[f32(&["batch", "seq", "64"]), f32(&["64", "64"])],
            1
        ),
        "f32[batch,seq,64]"
    );
    assert_eq!(
        check(MatMul::default(), &[f32(&["3"]), f32(&["3"])], 1),
        "f32[]"
    );
    assert_eq!(
        check(
            MatMul::default(),
            &[f32(&["2", "1", "3", "4"]), f32(&["5", "4", "6"])],
            1
        ),
        "f32[2,5,3,6]"
    );
    assert_eq!(
        check(MatMul::default(), &[f32(&["4"]), f32(&["2", "4", "6"])], 1),
        "f32[2,6]"
    );
    assert_eq!(
        check(MatMul::default(), &[f32(&["2", "3"]), f32(&["4", "6"])], 1),
        "error: the inner dims of the product differ (3 vs 4)"
    );
    let gemm = Gemm {
        transA: 1,
        ..Default::default()
    };
    assert_eq!(
        check(gemm, &[f32(&["3", "5"]), f32(&["3", "4"]), f32(&["4"])], 1),
        "f32[5,4]"
    );
    let e = Einsum {
        equation: "...ij,...jk->...ik".into(),
    };
    assert_eq!(
        check(e, &[f32(&["b", "2", "3"]), f32(&["3", "4"])], 1),
        "f32[b,2,4]"
    );
    let e = Einsum {
        equation: "ii".into(),
    };
    assert_eq!(check(e, &[f32(&["3", "3"])], 1), "f32[]");
}

#[test]
fn normalization_and_quantization_types() {
    assert_eq!(
        check(
            LayerNormalization {
                axis: 1,
                ..Default::default()
            },
            &[f32(&["b", "s", "8"]), f32(&["s", "8"])],
            3
        ),
        "f32[b,s,8], f32[b,1,1], f32[b,1,1]"
    );
    assert_eq!(
        check(Softmax { axis: 3 }, &[f32(&["2", "3"])], 1),
        "error: axis 3 is out of range for rank 2"
    );
    assert_eq!(
        check(Dropout::default(), &[f32(&["2", "3"])], 2),
        "f32[2,3], bool[2,3]"
    );
    assert_eq!(
        check(
            QuantizeLinear::default(),
            &[f32(&["2", "3"]), f32(&[]), t(DType::I8, &[])],
            1
        ),
        "i8[2,3]"
    );
    assert_eq!(
        check(
            DequantizeLinear::default(),
            &[t(DType::I8, &["2"]), f32(&[])],
            1
        ),
        "f32[2]"
    );
    assert_eq!(
        check(DynamicQuantizeLinear::default(), &[f32(&["2"])], 3),
        "u8[2], f32[], u8[]"
    );
}

#[test]
fn fused_shapes_and_addends() {
    let conv = FusedConv {
        pads: Some(vec![1, 1, 1, 1]),
        activation: Activation::Relu,
        ..Default::default()
    };
    let x = f32(&["N", "3", "8", "8"]);
    let w = f32(&["16", "3", "3", "3"]);
    assert_eq!(
        check(conv.clone(), &[x.clone(), w.clone()], 1),
        "f32[N,16,8,8]"
    );
    let full = [
        x.clone(),
        w.clone(),
        f32(&["16"]),
        f32(&["N", "16", "8", "8"]),
    ];
    assert_eq!(check(conv.clone(), &full, 1), "f32[N,16,8,8]");
    // A residual that broadcasts the result larger, or a bias that is not a vector, is refused.
    let grows = [x.clone(), w.clone(), None, f32(&["2", "16", "8", "8"])];
    assert!(check(conv.clone(), &grows, 1).contains("larger"));
    assert!(check(conv, &[x, w, f32(&["1", "16"])], 1).contains("vector"));

    let a = f32(&["B", "4", "8"]);
    let b = f32(&["8", "5"]);
    let mm = FusedMatMul::default();
    assert_eq!(
        check(mm.clone(), &[a.clone(), b.clone(), f32(&["5"])], 1),
        "f32[B,4,5]"
    );
    assert_eq!(
        check(
            mm.clone(),
            &[a.clone(), b.clone(), None, f32(&["B", "4", "5"])],
            1
        ),
        "f32[B,4,5]"
    );
    assert!(
        check(
            mm.clone(),
            &[a.clone(), b.clone(), f32(&["3", "4", "5"])],
            1
        )
        .contains("larger")
    );
    assert!(check(mm, &[a, b, Some(TensorType::known(DType::F64, &[5]))], 1).contains("f64"));
}

#[test]
fn channels_last_conv_shapes() {
    // x [N, H, W, C], w [kH, kW, C/g, M] -> [N, H', W', M].
    let conv = FusedConvNhwc {
        strides: Some(vec![2, 2]),
        pads: Some(vec![3, 3, 3, 3]),
        activation: Activation::Relu,
        ..Default::default()
    };
    let x = f32(&["N", "224", "224", "3"]);
    let w = f32(&["7", "7", "3", "64"]);
    assert_eq!(
        check(conv.clone(), &[x.clone(), w.clone()], 1),
        "f32[N,112,112,64]"
    );
    let full = [
        x.clone(),
        w.clone(),
        f32(&["64"]),
        f32(&["N", "112", "112", "64"]),
    ];
    assert_eq!(check(conv.clone(), &full, 1), "f32[N,112,112,64]");
    // The residual is channels-last too: a channels-first one does not broadcast.
    let nchw = [x.clone(), w.clone(), None, f32(&["N", "64", "112", "112"])];
    assert!(check(conv.clone(), &nchw, 1).contains("broadcast"));
    // Depthwise: 32 groups of one channel.
    let dw = FusedConvNhwc {
        group: 32,
        pads: Some(vec![1, 1, 1, 1]),
        ..Default::default()
    };
    assert_eq!(
        check(
            dw,
            &[f32(&["1", "14", "14", "32"]), f32(&["3", "3", "1", "32"])],
            1
        ),
        "f32[1,14,14,32]"
    );
    // A weight of another rank is refused.
    assert!(check(conv, &[x, f32(&["7", "7", "3"])], 1).contains("rank"));
}

#[test]
fn channels_last_pool_shapes() {
    let mp = MaxPoolNhwc {
        kernel_shape: vec![3, 3],
        strides: Some(vec![2, 2]),
        pads: Some(vec![1, 1, 1, 1]),
        ..Default::default()
    };
    assert_eq!(
        check(mp.clone(), &[f32(&["N", "112", "112", "64"])], 1),
        "f32[N,56,56,64]"
    );
    let ap = AveragePoolNhwc {
        kernel_shape: vec![7, 7],
        ..Default::default()
    };
    assert_eq!(
        check(ap, &[f32(&["1", "7", "7", "2048"])], 1),
        "f32[1,1,1,2048]"
    );
    // The rank must be the kernel's plus two.
    assert!(check(mp, &[f32(&["1", "8", "112", "112", "64"])], 1).contains("rank"));
}
