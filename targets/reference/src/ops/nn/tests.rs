//! Small known-data tests of the neural-network ops, run through inference and the interpreter, so every case
//! also checks that the inferred static shape is the computed one.

use jiuzhou_ir::ops::*;
use jiuzhou_ir::{DType, Data, GraphBuilder, Op, Tensor, Value};

use crate::Interpreter;

/// Runs one node on constant inputs; returns its outputs or the error message.
fn run(
    op: impl Into<Op>,
    inputs: Vec<Option<Tensor>>,
    num_outputs: usize,
) -> Result<Vec<Tensor>, String> {
    let mut b = GraphBuilder::new("t");
    let ids: Vec<_> = inputs
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.map(|t| b.constant(&format!("in{i}"), t)))
        .collect();
    let outs = b
        .node_opt(op, &ids, num_outputs)
        .map_err(|e| e.to_string())?;
    let static_types: Vec<_> = outs.iter().map(|&o| b.ty(o).clone()).collect();
    for o in outs {
        b.output(o);
    }
    let g = b.finish().map_err(|e| e.to_string())?;
    let values = Interpreter::default().run(&g, vec![]).map_err(|e| e.0)?;
    let tensors: Vec<Tensor> = values
        .into_iter()
        .map(|v| match v {
            Value::Tensor(t) => (*t).clone(),
            other => panic!("not a tensor: {other:?}"),
        })
        .collect();
    for (t, ty) in tensors.iter().zip(&static_types) {
        let tt = ty.as_tensor().expect("tensor type");
        assert_eq!(tt.dtype, t.dtype(), "inferred dtype");
        if let Some(dims) = tt.known_dims() {
            assert_eq!(dims, t.shape(), "inferred shape");
        }
    }
    Ok(tensors)
}

fn f32s(shape: &[usize], v: Vec<f32>) -> Option<Tensor> {
    Some(Tensor::from_vec(shape.to_vec(), v).unwrap())
}

fn arange(shape: &[usize]) -> Option<Tensor> {
    let n = shape.iter().product::<usize>();
    f32s(shape, (0..n).map(|i| i as f32).collect())
}

fn ones(shape: &[usize]) -> Option<Tensor> {
    f32s(shape, vec![1.0; shape.iter().product()])
}

/// The first output's shape and values (rounded to 4 decimals for printing).
fn out(r: Result<Vec<Tensor>, String>) -> (Vec<usize>, Vec<f64>) {
    let t = r.unwrap().remove(0);
    let v = t
        .to_f64_vec()
        .unwrap()
        .into_iter()
        .map(|x| (x * 1e4).round() / 1e4)
        .collect();
    (t.shape().to_vec(), v)
}

#[test]
fn conv_matches_the_onnx_examples() {
    let (shape, v) = out(run(
        Conv::default(),
        vec![arange(&[1, 1, 5, 5]), ones(&[1, 1, 3, 3])],
        1,
    ));
    assert_eq!(shape, vec![1, 1, 3, 3]);
    assert_eq!(
        v,
        vec![54.0, 63.0, 72.0, 99.0, 108.0, 117.0, 144.0, 153.0, 162.0]
    );
    let padded = Conv {
        pads: Some(vec![1, 1, 1, 1]),
        ..Default::default()
    };
    let (_, v) = out(run(
        padded,
        vec![arange(&[1, 1, 5, 5]), ones(&[1, 1, 3, 3])],
        1,
    ));
    assert_eq!(&v[..5], &[12.0, 21.0, 27.0, 33.0, 24.0]);
    let strided = Conv {
        strides: Some(vec![2, 2]),
        pads: Some(vec![1, 0, 1, 0]),
        ..Default::default()
    };
    let (shape, v) = out(run(
        strided,
        vec![arange(&[1, 1, 7, 5]), ones(&[1, 1, 3, 3])],
        1,
    ));
    assert_eq!(shape, vec![1, 1, 4, 2]);
    assert_eq!(v, vec![21.0, 33.0, 99.0, 117.0, 189.0, 207.0, 171.0, 183.0]);
}

#[test]
fn conv_groups_bias_and_dilation() {
    // Two groups of one channel each; the second channel's kernel doubles, plus a bias per output channel.
    let w = f32s(&[2, 1, 1, 1], vec![1.0, 2.0]);
    let op = Conv {
        group: 2,
        ..Default::default()
    };
    let (_, v) = out(run(
        op,
        vec![arange(&[1, 2, 1, 2]), w, f32s(&[2], vec![10.0, 20.0])],
        1,
    ));
    assert_eq!(v, vec![10.0, 11.0, 24.0, 26.0]);
    // 1-D, dilation 2: y[i] = x[i] + x[i + 2].
    let op = Conv {
        dilations: Some(vec![2]),
        ..Default::default()
    };
    let (_, v) = out(run(op, vec![arange(&[1, 1, 5]), ones(&[1, 1, 2])], 1));
    assert_eq!(v, vec![2.0, 4.0, 6.0]);
    // f64 and f16 compute too.
    let x = Tensor::from_vec(vec![1, 1, 2], vec![1.0f64, 2.0]).unwrap();
    let w = Tensor::from_vec(vec![1, 1, 1], vec![3.0f64]).unwrap();
    assert_eq!(
        out(run(Conv::default(), vec![Some(x), Some(w)], 1)).1,
        vec![3.0, 6.0]
    );
    let h = |v: f32| half::f16::from_f32(v);
    let x = Tensor::from_vec(vec![1, 1, 2], vec![h(1.0), h(2.0)]).unwrap();
    let w = Tensor::from_vec(vec![1, 1, 1], vec![h(0.5)]).unwrap();
    assert_eq!(
        out(run(Conv::default(), vec![Some(x), Some(w)], 1)).1,
        vec![0.5, 1.0]
    );
}

#[test]
fn conv_transpose_examples() {
    let (shape, v) = out(run(
        ConvTranspose::default(),
        vec![arange(&[1, 1, 3, 3]), ones(&[1, 2, 3, 3])],
        1,
    ));
    assert_eq!(shape, vec![1, 2, 5, 5]);
    assert_eq!(
        &v[..10],
        &[0.0, 1.0, 3.0, 3.0, 2.0, 3.0, 8.0, 15.0, 12.0, 7.0]
    );
    let op = ConvTranspose {
        strides: Some(vec![3, 2]),
        output_shape: Some(vec![10, 8]),
        ..Default::default()
    };
    let (shape, v) = out(run(op, vec![arange(&[1, 1, 3, 3]), ones(&[1, 2, 3, 3])], 1));
    assert_eq!(shape, vec![1, 2, 10, 8]);
    assert_eq!(&v[..8], &[0.0, 0.0, 1.0, 1.0, 3.0, 2.0, 2.0, 0.0]);
    assert_eq!(&v[72..80], &[0.0; 8]);
    let op = ConvTranspose {
        strides: Some(vec![2, 2]),
        auto_pad: "SAME_UPPER".into(),
        ..Default::default()
    };
    let (shape, v) = out(run(op, vec![arange(&[1, 1, 3, 3]), ones(&[1, 2, 3, 3])], 1));
    assert_eq!(shape, vec![1, 2, 6, 6]);
    assert_eq!(&v[12..18], &[3.0, 3.0, 8.0, 5.0, 12.0, 7.0]);
}

#[test]
fn pools() {
    let x = f32s(&[1, 1, 4, 4], (1..=16).map(|i| i as f32).collect());
    let op = MaxPool {
        kernel_shape: vec![2, 2],
        strides: Some(vec![2, 2]),
        ..Default::default()
    };
    let r = run(op, vec![x.clone()], 2).unwrap();
    assert_eq!(r[0].as_slice::<f32>().unwrap(), &[6.0, 8.0, 14.0, 16.0]);
    assert_eq!(r[1].as_slice::<i64>().unwrap(), &[5, 7, 13, 15]);
    let op = MaxPool {
        kernel_shape: vec![2, 2],
        strides: Some(vec![2, 2]),
        storage_order: 1,
        ..Default::default()
    };
    assert_eq!(
        run(op, vec![x.clone()], 2).unwrap()[1]
            .as_slice::<i64>()
            .unwrap(),
        &[5, 13, 7, 15]
    );
    let op = AveragePool {
        kernel_shape: vec![3, 3],
        strides: Some(vec![2, 2]),
        ceil_mode: 1,
        ..Default::default()
    };
    assert_eq!(
        out(run(op, vec![x.clone()], 1)).1,
        vec![6.0, 7.5, 12.0, 13.5]
    );
    let with_pad = |count_include_pad| AveragePool {
        kernel_shape: vec![3, 3],
        pads: Some(vec![1, 1, 1, 1]),
        count_include_pad,
        ..Default::default()
    };
    // The top-left window holds 1, 2, 5, 6 and five padding taps.
    assert_eq!(out(run(with_pad(0), vec![x.clone()], 1)).1[0], 3.5);
    assert_eq!(out(run(with_pad(1), vec![x.clone()], 1)).1[0], 1.5556);
    let (shape, v) = out(run(GlobalAveragePool::default(), vec![x.clone()], 1));
    assert_eq!((shape, v), (vec![1, 1, 1, 1], vec![8.5]));
    assert_eq!(
        out(run(GlobalMaxPool::default(), vec![x.clone()], 1)).1,
        vec![16.0]
    );
    let op = LpPool {
        kernel_shape: vec![2, 2],
        strides: Some(vec![2, 2]),
        p: 1,
        ..Default::default()
    };
    assert_eq!(out(run(op, vec![x], 1)).1, vec![14.0, 22.0, 46.0, 54.0]);
    let u8s = Tensor::from_vec(vec![1, 1, 2, 2], vec![1u8, 200, 3, 4]).unwrap();
    let op = MaxPool {
        kernel_shape: vec![2, 2],
        ..Default::default()
    };
    assert_eq!(
        run(op, vec![Some(u8s)], 1).unwrap()[0]
            .as_slice::<u8>()
            .unwrap(),
        &[200]
    );
}

#[test]
fn products() {
    // Gemm: Aᵀ·B·2 + C, C broadcast along rows.
    let op = Gemm {
        transA: 1,
        alpha: 2.0,
        ..Default::default()
    };
    let r = out(run(
        op,
        vec![
            arange(&[2, 2]),
            ones(&[2, 3]),
            f32s(&[3], vec![1.0, 2.0, 3.0]),
        ],
        1,
    ));
    assert_eq!(r, (vec![2, 3], vec![5.0, 6.0, 7.0, 9.0, 10.0, 11.0]));
    let op = Gemm {
        transB: 1,
        beta: 0.5,
        ..Default::default()
    };
    let r = out(run(
        op,
        vec![arange(&[1, 2]), arange(&[2, 2]), f32s(&[1, 1], vec![4.0])],
        1,
    ));
    assert_eq!(r, (vec![1, 2], vec![3.0, 5.0]));
    // MatMul: batched with broadcasting, and 1-D operands.
    let r = out(run(
        MatMul::default(),
        vec![arange(&[2, 1, 2]), arange(&[2, 3])],
        1,
    ));
    assert_eq!(r, (vec![2, 1, 3], vec![3.0, 4.0, 5.0, 9.0, 14.0, 19.0]));
    let r = out(run(
        MatMul::default(),
        vec![arange(&[1, 2]), arange(&[2, 2, 1])],
        1,
    ));
    assert_eq!(r, (vec![2, 1, 1], vec![1.0, 3.0]));
    assert_eq!(
        out(run(MatMul::default(), vec![arange(&[3]), arange(&[3])], 1)),
        (vec![], vec![5.0])
    );
    assert_eq!(
        out(run(
            MatMul::default(),
            vec![arange(&[2]), arange(&[2, 2])],
            1
        )),
        (vec![2], vec![2.0, 3.0])
    );
    let ints = Tensor::from_vec(vec![2, 2], vec![1i64, 2, 3, 4]).unwrap();
    let r = run(MatMul::default(), vec![Some(ints.clone()), Some(ints)], 1).unwrap();
    assert_eq!(r[0].as_slice::<i64>().unwrap(), &[7, 10, 15, 22]);
    let err = run(MatMul::default(), vec![arange(&[2, 3]), arange(&[2, 3])], 1).unwrap_err();
    assert!(err.contains("inner dims"), "{err}");
    // MatMulInteger with zero points.
    let a = Tensor::from_vec(vec![1, 2], vec![11u8, 12]).unwrap();
    let b = Tensor::from_vec(vec![2, 1], vec![1u8, 2]).unwrap();
    let r = run(
        MatMulInteger::default(),
        vec![Some(a), Some(b), Some(Tensor::scalar(10u8))],
        1,
    )
    .unwrap();
    assert_eq!(r[0].as_slice::<i32>().unwrap(), &[5]);
}

#[test]
fn einsum() {
    let e = |eq: &str| Einsum {
        equation: eq.into(),
    };
    assert_eq!(
        out(run(e("ii"), vec![arange(&[3, 3])], 1)),
        (vec![], vec![12.0])
    );
    assert_eq!(
        out(run(e("ij->ji"), vec![arange(&[2, 3])], 1)).1,
        vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
    );
    let r = out(run(
        e("...ij,...jk"),
        vec![arange(&[2, 1, 2]), arange(&[2, 3])],
        1,
    ));
    assert_eq!(r, (vec![2, 1, 3], vec![3.0, 4.0, 5.0, 9.0, 14.0, 19.0]));
    assert_eq!(
        out(run(e("bii->bi"), vec![arange(&[1, 2, 2])], 1)).1,
        vec![0.0, 3.0]
    );
    assert_eq!(
        out(run(e("i,i"), vec![arange(&[3]), arange(&[3])], 1)).1,
        vec![5.0]
    );
}

#[test]
fn normalizations() {
    // BatchNormalization, inference: (x - mean) / sqrt(var + eps) * scale + bias per channel.
    let op = BatchNormalization {
        epsilon: 0.0,
        ..Default::default()
    };
    let r = out(run(
        op,
        vec![
            arange(&[1, 2, 2]),
            f32s(&[2], vec![1.0, 2.0]),
            f32s(&[2], vec![0.0, 1.0]),
            f32s(&[2], vec![1.0, 2.0]),
            f32s(&[2], vec![4.0, 1.0]),
        ],
        1,
    ));
    assert_eq!(r.1, vec![-0.5, 0.0, 1.0, 3.0]);
    // Training mode returns the running statistics.
    let op = BatchNormalization {
        epsilon: 0.0,
        training_mode: 1,
        momentum: 0.5,
    };
    let r = run(
        op,
        vec![
            arange(&[2, 1]),
            ones(&[1]),
            f32s(&[1], vec![0.0]),
            f32s(&[1], vec![0.0]),
            ones(&[1]),
        ],
        3,
    )
    .unwrap();
    assert_eq!(r[0].as_slice::<f32>().unwrap(), &[-1.0, 1.0]);
    assert_eq!(r[1].as_slice::<f32>().unwrap(), &[0.25]);
    assert_eq!(r[2].as_slice::<f32>().unwrap(), &[0.625]);
    let op = LayerNormalization {
        epsilon: 0.0,
        ..Default::default()
    };
    let r = run(
        op,
        vec![
            f32s(&[2, 2], vec![1.0, 3.0, 2.0, 4.0]),
            ones(&[2]),
            f32s(&[2], vec![0.0, 1.0]),
        ],
        3,
    )
    .unwrap();
    assert_eq!(r[0].as_slice::<f32>().unwrap(), &[-1.0, 2.0, -1.0, 2.0]);
    assert_eq!(r[1].shape(), &[2, 1]);
    assert_eq!(r[1].as_slice::<f32>().unwrap(), &[2.0, 3.0]);
    let r = out(run(
        InstanceNormalization { epsilon: 0.0 },
        vec![arange(&[1, 1, 2]), ones(&[1]), ones(&[1])],
        1,
    ));
    assert_eq!(r.1, vec![0.0, 2.0]);
    let op = GroupNormalization {
        epsilon: 0.0,
        num_groups: 1,
        ..Default::default()
    };
    let r = out(run(
        op,
        vec![
            arange(&[1, 2, 1]),
            f32s(&[2], vec![1.0, 2.0]),
            f32s(&[2], vec![0.0, 0.0]),
        ],
        1,
    ));
    assert_eq!(r.1, vec![-1.0, 2.0]);
    let r = out(run(
        RMSNormalization {
            epsilon: 0.0,
            ..Default::default()
        },
        vec![f32s(&[2], vec![3.0, 4.0]), ones(&[2])],
        1,
    ));
    assert_eq!(r.1, vec![0.8485, 1.1314]);
    let r = out(run(
        LpNormalization { p: 1, axis: -1 },
        vec![f32s(&[2], vec![-1.0, 3.0])],
        1,
    ));
    assert_eq!(r.1, vec![-0.25, 0.75]);
    let r = out(run(
        MeanVarianceNormalization { axes: vec![1] },
        vec![f32s(&[1, 2], vec![1.0, 3.0])],
        1,
    ));
    assert_eq!(r.1, vec![-1.0, 1.0]);
    // LRN with size 3 over two channels: each channel sees both.
    let op = LRN {
        size: 3,
        alpha: 3.0,
        beta: 1.0,
        bias: 1.0,
    };
    let r = out(run(op, vec![f32s(&[1, 2, 1, 1], vec![1.0, 2.0])], 1));
    assert_eq!(r.1, vec![0.1667, 0.3333]);
}

#[test]
#[allow(clippy::approx_constant)] // Expected values are logarithms rounded to 4 decimals.
fn softmax_family_and_dropout() {
    let x = f32s(&[2, 2], vec![0.0, 0.6931472, 1.0, 1.0]);
    assert_eq!(
        out(run(Softmax::default(), vec![x.clone()], 1)).1,
        vec![0.3333, 0.6667, 0.5, 0.5]
    );
    assert_eq!(
        out(run(Softmax { axis: 0 }, vec![x.clone()], 1)).1,
        vec![0.2689, 0.4239, 0.7311, 0.5761]
    );
    assert_eq!(
        out(run(LogSoftmax::default(), vec![x.clone()], 1)).1,
        vec![-1.0986, -0.4055, -0.6931, -0.6931]
    );
    assert_eq!(
        out(run(Hardmax::default(), vec![x.clone()], 1)).1,
        vec![0.0, 1.0, 1.0, 0.0]
    );
    let r = run(Dropout::default(), vec![x.clone()], 2).unwrap();
    assert_eq!(r[0], x.clone().unwrap());
    assert_eq!(r[1].as_slice::<bool>().unwrap(), &[true; 4]);
    // Training mode with seed 0 draws numpy's first uniforms: 0.5488, 0.7152, 0.6028, 0.5449, 0.4237.
    let op = Dropout { seed: Some(0) };
    let r = run(
        op,
        vec![
            ones(&[5]),
            Some(Tensor::scalar(0.5f32)),
            Some(Tensor::scalar(true)),
        ],
        2,
    )
    .unwrap();
    assert_eq!(
        r[1].as_slice::<bool>().unwrap(),
        &[true, true, true, true, false]
    );
    assert_eq!(r[0].as_slice::<f32>().unwrap(), &[2.0, 2.0, 2.0, 2.0, 0.0]);
}

#[test]
fn quantization() {
    let x = f32s(&[4], vec![0.0, 2.0, 3.0, -1000.0]);
    let op = QuantizeLinear::default();
    let r = run(
        op,
        vec![
            x.clone(),
            Some(Tensor::scalar(2.0f32)),
            Some(Tensor::scalar(128u8)),
        ],
        1,
    )
    .unwrap();
    assert_eq!(r[0].as_slice::<u8>().unwrap(), &[128, 129, 130, 0]);
    let op = QuantizeLinear {
        output_dtype: DType::I4.onnx_code() as i64,
        ..Default::default()
    };
    let r = run(op, vec![x.clone(), Some(Tensor::scalar(1.0f32))], 1).unwrap();
    assert!(r[0].data() == &Data::Bits(vec![0, 2, 3, 8]));
    let op = DequantizeLinear::default();
    let q = Tensor::from_data(DType::I4, vec![2], Data::Bits(vec![0xf, 0x7])).unwrap();
    let r = run(op, vec![Some(q), Some(Tensor::scalar(0.5f32))], 1).unwrap();
    assert_eq!(r[0].as_slice::<f32>().unwrap(), &[-0.5, 3.5]);
    // Per-axis dequantization with zero points.
    let q = Tensor::from_vec(vec![2, 2], vec![10u8, 10, 10, 10]).unwrap();
    let op = DequantizeLinear {
        axis: 0,
        ..Default::default()
    };
    let r = run(
        op,
        vec![
            Some(q),
            f32s(&[2], vec![1.0, 2.0]),
            Some(Tensor::vector(vec![8u8, 9])),
        ],
        1,
    )
    .unwrap();
    assert_eq!(r[0].as_slice::<f32>().unwrap(), &[2.0, 2.0, 2.0, 2.0]);
    let r = run(
        DynamicQuantizeLinear::default(),
        vec![f32s(&[3], vec![0.0, 2.0, -0.55])],
        3,
    )
    .unwrap();
    assert_eq!(r[0].as_slice::<u8>().unwrap(), &[55, 255, 0]);
    assert_eq!(r[2].as_slice::<u8>().unwrap(), &[55]);
}
