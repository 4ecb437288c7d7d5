//! Tests of the data-movement ops on small tensors. Each case builds a one-node graph from constants (so inference
//! runs too and its known dims are checked against the result), evaluates it and prints the outputs.

use jiuzhou_ir::ops::*;
use jiuzhou_ir::{Data, Dim, GraphBuilder, Op, Tensor, Value, ValueType};

use crate::Interpreter;

/// A tensor from a shape and values.
fn t<T: jiuzhou_ir::Elem>(shape: &[usize], v: Vec<T>) -> Option<Tensor> {
    Some(Tensor::from_vec(shape.to_vec(), v).unwrap())
}

/// An f32 tensor holding 0, 1, 2, ... of the given shape.
fn iota(shape: &[usize]) -> Option<Tensor> {
    let n = shape.iter().product::<usize>();
    t(shape, (0..n).map(|x| x as f32).collect())
}

/// An i64 vector.
fn ints(v: &[i64]) -> Option<Tensor> {
    t(&[v.len()], v.to_vec())
}

/// Prints a tensor as `shape: values`.
fn show(t: &Tensor) -> String {
    let vals: Vec<String> = match t.data() {
        Data::String(v) => v.iter().map(|s| format!("{s:?}")).collect(),
        Data::Bool(v) => v.iter().map(|b| b.to_string()).collect(),
        _ => t
            .to_f64_vec()
            .unwrap_or_default()
            .iter()
            .map(|x| x.to_string())
            .collect(),
    };
    format!("{:?}: {}", t.shape(), vals.join(" "))
}

/// Runs `op` on constant inputs; prints every output (`; `-separated) or the error.
fn run(op: impl Into<Op>, inputs: Vec<Option<Tensor>>, outputs: usize) -> String {
    let mut b = GraphBuilder::new("case");
    let ids: Vec<_> = inputs
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.map(|t| b.constant(&format!("c{i}"), t)))
        .collect();
    let outs = match b.node_opt(op, &ids, outputs) {
        Ok(o) => o,
        Err(e) => return format!("infer error: {e}"),
    };
    let tys: Vec<ValueType> = outs.iter().map(|&o| b.ty(o).clone()).collect();
    for &o in &outs {
        b.output(o);
    }
    let g = b.finish().unwrap();
    let vals = match Interpreter::default().run(&g, vec![]) {
        Ok(v) => v,
        Err(e) => return format!("error: {e}"),
    };
    let mut shown = Vec::new();
    for (v, ty) in vals.iter().zip(&tys) {
        let Value::Tensor(v) = v else {
            shown.push(format!("{v:?}"));
            continue;
        };
        let ty = ty.as_tensor().unwrap();
        assert_eq!(ty.dtype, v.dtype(), "inferred dtype");
        if let Some(dims) = &ty.shape {
            assert_eq!(dims.len(), v.rank(), "inferred rank of {ty}");
            for (d, &n) in dims.iter().zip(v.shape()) {
                if let Dim::Known(k) = d {
                    assert_eq!(*k, n, "inferred {ty} but got {:?}", v.shape());
                }
            }
        }
        shown.push(show(v));
    }
    shown.join("; ")
}

#[test]
fn shapes_and_reshapes() {
    let x = || iota(&[2, 3, 4]);
    assert_eq!(run(Shape::default(), vec![x()], 1), "[3]: 2 3 4");
    let s = Shape {
        start: -2,
        end: None,
    };
    assert_eq!(run(s, vec![x()], 1), "[2]: 3 4");
    assert_eq!(run(Size::default(), vec![x()], 1), "[]: 24");
    assert_eq!(
        run(
            Reshape::default(),
            vec![iota(&[2, 3]), ints(&[0, -1, 1])],
            1
        ),
        "[2, 3, 1]: 0 1 2 3 4 5"
    );
    assert_eq!(
        run(Reshape::default(), vec![iota(&[2, 3]), ints(&[4, -1])], 1),
        "infer error: Reshape: cannot reshape 6 elements into a multiple of 4"
    );
    assert_eq!(
        run(Flatten { axis: 2 }, vec![x()], 1).split(':').next(),
        Some("[6, 4]")
    );
    assert_eq!(
        run(Squeeze::default(), vec![iota(&[1, 2, 1]), ints(&[0])], 1),
        "[2, 1]: 0 1"
    );
    assert_eq!(
        run(Unsqueeze::default(), vec![iota(&[2]), ints(&[-1, 0])], 1),
        "[1, 2, 1]: 0 1"
    );
    assert_eq!(
        run(Expand::default(), vec![iota(&[2, 1]), ints(&[2, 1, 3])], 1),
        "[2, 2, 3]: 0 0 0 1 1 1 0 0 0 1 1 1"
    );
}

#[test]
fn constants_and_eye() {
    let c = ConstantOfShape {
        value: Some(std::sync::Arc::new(Tensor::vector(vec![7i32]))),
    };
    assert_eq!(run(c, vec![ints(&[2, 2])], 1), "[2, 2]: 7 7 7 7");
    assert_eq!(
        run(ConstantOfShape::default(), vec![ints(&[0])], 1),
        "[0]: "
    );
    // A huge shape is an error, not an allocation.
    assert!(
        run(
            ConstantOfShape::default(),
            vec![ints(&[1 << 40, 1 << 40])],
            1
        )
        .contains("too large")
    );
    let e = EyeLike {
        dtype: Some(9),
        k: 1,
    };
    assert_eq!(
        run(e, vec![iota(&[2, 3])], 1),
        "[2, 3]: false true false false false true"
    );
}

#[test]
fn transposes_and_blocks() {
    let tr = Transpose {
        perm: Some(vec![1, 0]),
    };
    assert_eq!(run(tr, vec![iota(&[2, 3])], 1), "[3, 2]: 0 3 1 4 2 5");
    let d = DepthToSpace {
        blocksize: 2,
        mode: "DCR".into(),
    };
    assert_eq!(
        run(d, vec![iota(&[1, 4, 1, 1])], 1),
        "[1, 1, 2, 2]: 0 1 2 3"
    );
    let d = DepthToSpace {
        blocksize: 2,
        mode: "CRD".into(),
    };
    assert_eq!(
        run(d, vec![iota(&[1, 8, 1, 1])], 1),
        "[1, 2, 2, 2]: 0 1 2 3 4 5 6 7"
    );
    let s = SpaceToDepth {
        blocksize: 2,
        mode: "DCR".into(),
    };
    assert_eq!(
        run(s, vec![iota(&[1, 1, 2, 2])], 1),
        "[1, 4, 1, 1]: 0 1 2 3"
    );
    assert_eq!(
        run(Tile::default(), vec![iota(&[2]), ints(&[3])], 1),
        "[6]: 0 1 0 1 0 1"
    );
    assert_eq!(
        run(Tile::default(), vec![iota(&[1, 2]), ints(&[2, 2])], 1),
        "[2, 4]: 0 1 0 1 0 1 0 1"
    );
}

#[test]
fn concat_split_slice() {
    assert_eq!(
        run(Concat { axis: -1 }, vec![iota(&[2, 1]), iota(&[2, 2])], 1),
        "[2, 3]: 0 0 1 1 2 3"
    );
    let strings = t(&[2], vec!["a".to_string(), "b".to_string()]);
    assert_eq!(
        run(Concat { axis: 0 }, vec![strings.clone(), strings], 1),
        "[4]: \"a\" \"b\" \"a\" \"b\""
    );
    assert_eq!(
        run(Split::default(), vec![iota(&[7])], 3),
        "[3]: 0 1 2; [3]: 3 4 5; [1]: 6"
    );
    assert_eq!(
        run(
            Split {
                axis: 1,
                num_outputs: None
            },
            vec![iota(&[2, 3]), ints(&[1, 2])],
            2
        ),
        "[2, 1]: 0 3; [2, 2]: 1 2 4 5"
    );
    let sl = Slice::default;
    assert_eq!(
        run(
            sl(),
            vec![
                iota(&[10]),
                ints(&[-1]),
                ints(&[i64::MIN]),
                ints(&[0]),
                ints(&[-3])
            ],
            1
        ),
        "[4]: 9 6 3 0"
    );
    assert_eq!(
        run(
            sl(),
            vec![
                iota(&[3, 4]),
                ints(&[1, 1]),
                ints(&[1000, 3]),
                ints(&[0, 1]),
                ints(&[1, 1])
            ],
            1
        ),
        "[2, 2]: 5 6 9 10"
    );
    assert_eq!(
        run(sl(), vec![iota(&[3]), ints(&[5]), ints(&[10])], 1),
        "[0]: "
    );
}

#[test]
fn pads() {
    let x = || iota(&[3]);
    let pad = |mode: &str| Pad { mode: mode.into() };
    assert_eq!(
        run(pad("constant"), vec![x(), ints(&[2, 1])], 1),
        "[6]: 0 0 0 1 2 0"
    );
    assert_eq!(
        run(
            pad("constant"),
            vec![x(), ints(&[1, -1]), t(&[], vec![9f32])],
            1
        ),
        "[3]: 9 0 1"
    );
    assert_eq!(
        run(pad("reflect"), vec![x(), ints(&[2, 2])], 1),
        "[7]: 2 1 0 1 2 1 0"
    );
    assert_eq!(
        run(pad("edge"), vec![x(), ints(&[2, 1])], 1),
        "[6]: 0 0 0 1 2 2"
    );
    assert_eq!(
        run(pad("wrap"), vec![x(), ints(&[2, 1])], 1),
        "[6]: 1 2 0 1 2 0"
    );
    assert_eq!(
        run(
            pad("constant"),
            vec![iota(&[2, 2]), ints(&[1, 0]), None, ints(&[-1])],
            1
        ),
        "[2, 3]: 0 0 1 0 2 3"
    );
    let c = CenterCropPad { axes: None };
    assert_eq!(
        run(c, vec![iota(&[5, 1]), ints(&[2, 3])], 1),
        "[2, 3]: 0 1 0 0 2 0"
    );
}

#[test]
fn col2im_trilu_reverse() {
    // One channel, 2x2 blocks over a 3x3 image: overlapping windows add up.
    let x = t(&[1, 4, 4], vec![1f32; 16]);
    assert_eq!(
        run(Col2Im::default(), vec![x, ints(&[3, 3]), ints(&[2, 2])], 1),
        "[1, 1, 3, 3]: 1 2 1 2 4 2 1 2 1"
    );
    assert_eq!(
        run(Trilu::default(), vec![iota(&[2, 3])], 1),
        "[2, 3]: 0 1 2 0 4 5"
    );
    assert_eq!(
        run(
            Trilu { upper: 0 },
            vec![iota(&[2, 3]), t(&[], vec![-1i64])],
            1
        ),
        "[2, 3]: 0 0 0 3 0 0"
    );
    let r = ReverseSequence {
        batch_axis: 0,
        time_axis: 1,
    };
    assert_eq!(
        run(r, vec![iota(&[2, 3]), ints(&[2, 3])], 1),
        "[2, 3]: 1 0 2 5 4 3"
    );
}

#[test]
fn gathers() {
    assert_eq!(
        run(
            Gather { axis: 1 },
            vec![iota(&[2, 3]), t(&[2], vec![-1i32, 0])],
            1
        ),
        "[2, 2]: 2 0 5 3"
    );
    assert_eq!(
        run(Gather { axis: 0 }, vec![iota(&[2, 3]), ints(&[2])], 1),
        "error: node `gather_0` (Gather): index 2 is out of range for a dim of size 2"
    );
    assert_eq!(
        run(
            GatherElements { axis: 1 },
            vec![iota(&[2, 2]), t(&[2, 2], vec![0i64, 0, 1, 0])],
            1
        ),
        "[2, 2]: 0 0 3 2"
    );
    assert_eq!(
        run(
            GatherND::default(),
            vec![iota(&[2, 2]), t(&[2, 2], vec![0i64, 0, 1, 1])],
            1
        ),
        "[2]: 0 3"
    );
    assert_eq!(
        run(
            GatherND { batch_dims: 1 },
            vec![iota(&[2, 2]), t(&[2, 1], vec![1i64, 0])],
            1
        ),
        "[2]: 1 2"
    );
}

#[test]
fn scatters() {
    let upd = || t(&[1, 2], vec![10f32, 20.0]);
    assert_eq!(
        run(
            ScatterElements {
                axis: 1,
                reduction: "none".into()
            },
            vec![iota(&[2, 3]), t(&[1, 2], vec![2i64, 0]), upd()],
            1
        ),
        "[2, 3]: 20 1 10 3 4 5"
    );
    assert_eq!(
        run(
            ScatterElements {
                axis: 0,
                reduction: "add".into()
            },
            vec![iota(&[2, 2]), t(&[1, 2], vec![1i64, -1]), upd()],
            1
        ),
        "[2, 2]: 0 1 12 23"
    );
    assert_eq!(
        run(
            ScatterND {
                reduction: "mul".into()
            },
            vec![iota(&[2, 2]), t(&[1, 1], vec![1i64]), upd()],
            1
        ),
        "[2, 2]: 0 1 20 60"
    );
    assert_eq!(
        run(
            ScatterND {
                reduction: "none".into()
            },
            vec![iota(&[2, 2]), t(&[1, 1], vec![5i64]), upd()],
            1
        ),
        "error: node `scatternd_0` (ScatterND): index 5 is out of range for a dim of size 2"
    );
    let ts = TensorScatter {
        axis: -1,
        mode: "circular".into(),
    };
    assert_eq!(
        run(
            ts,
            vec![
                iota(&[2, 3]),
                t(&[2, 2], vec![10f32, 11.0, 12.0, 13.0]),
                ints(&[2, 0])
            ],
            1
        ),
        "[2, 3]: 11 1 10 12 13 5"
    );
}

#[test]
fn data_dependent() {
    assert_eq!(
        run(
            NonZero::default(),
            vec![t(&[2, 2], vec![1f32, 0.0, 0.0, 3.0])],
            1
        ),
        "[2, 2]: 0 1 0 1"
    );
    assert_eq!(
        run(
            Compress { axis: Some(1) },
            vec![iota(&[2, 3]), t(&[2], vec![false, true])],
            1
        ),
        "[2, 1]: 1 4"
    );
    assert_eq!(
        run(
            Unique::default(),
            vec![t(&[5], vec![2f32, 1.0, 2.0, 3.0, 1.0])],
            4
        ),
        "[3]: 1 2 3; [3]: 1 0 3; [5]: 1 0 1 2 0; [3]: 2 2 1"
    );
    assert_eq!(
        run(
            Unique {
                axis: None,
                sorted: 0
            },
            vec![t(&[5], vec![2f32, 1.0, 2.0, 3.0, 1.0])],
            4
        ),
        "[3]: 2 1 3; [3]: 0 1 3; [5]: 0 1 0 2 1; [3]: 2 2 1"
    );
    assert_eq!(
        run(
            Unique {
                axis: Some(0),
                sorted: 1
            },
            vec![t(&[3, 2], vec![1i32, 0, 0, 1, 1, 0])],
            4
        ),
        "[2, 2]: 0 1 1 0; [2]: 1 0; [3]: 1 0 1; [2]: 1 2"
    );
    assert_eq!(
        run(
            Range::default(),
            vec![t(&[], vec![1i32]), t(&[], vec![8i32]), t(&[], vec![3i32])],
            1
        ),
        "[3]: 1 4 7"
    );
    assert_eq!(
        run(
            Range::default(),
            vec![
                t(&[], vec![1f32]),
                t(&[], vec![0f32]),
                t(&[], vec![-0.5f32])
            ],
            1
        ),
        "[2]: 1 0.5"
    );
    assert_eq!(
        run(
            OneHot { axis: 0 },
            vec![
                ints(&[1, -1, 5]),
                t(&[], vec![3f32]),
                t(&[2], vec![0i32, 9])
            ],
            1
        ),
        "[3, 3]: 0 0 0 9 0 0 0 9 0"
    );
}

#[test]
fn identity_passes_sequences_through() {
    let mut b = GraphBuilder::new("id");
    let elem: ValueType = jiuzhou_ir::TensorType::known(jiuzhou_ir::DType::F32, &[1]).into();
    let x = b.input("x", ValueType::Sequence(Box::new(elem.clone())));
    let y = b.node1(Identity::default(), &[x]).unwrap();
    b.output(y);
    let g = b.finish().unwrap();
    let seq = Value::Sequence {
        elem,
        items: vec![Value::from(Tensor::vector(vec![1f32]))],
    };
    let out = Interpreter::default().run(&g, vec![seq.clone()]).unwrap();
    assert_eq!(out, vec![seq]);
}
