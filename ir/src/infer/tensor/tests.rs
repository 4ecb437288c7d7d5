//! Table-driven tests of the data-movement inference rules: each case gives input types (with constants) and the
//! printed output types.

use std::sync::Arc;

use crate::infer::{InferCx, InferOp, SymGen};
use crate::ops::*;
use crate::{DType, Dim, Op, Tensor, TensorType, ValueType};

/// One input of a test case.
enum In {
    /// A tensor of this type (dims: numbers or symbol names).
    Ty(DType, &'static [&'static str]),
    /// A constant i64 vector.
    Ints(Vec<i64>),
    /// A tensor of unknown rank.
    Unranked(DType),
    /// An absent optional input.
    Absent,
}

use In::*;

/// Runs `op`'s rule on `inputs` with `outputs` outputs and prints the output types, or the error.
fn infer(op: impl Into<Op>, inputs: Vec<In>, outputs: usize) -> String {
    let mut tys = Vec::new();
    let mut consts = Vec::new();
    for i in inputs {
        let (ty, c) = match i {
            Ty(d, dims) => (
                Some(ValueType::Tensor(TensorType::new(
                    d,
                    dims.iter().map(|s| match s.parse::<usize>() {
                        Ok(n) => Dim::Known(n),
                        Err(_) => Dim::Sym(s.to_string()),
                    }),
                ))),
                None,
            ),
            Ints(v) => (
                Some(TensorType::known(DType::I64, &[v.len()]).into()),
                Some(Arc::new(Tensor::vector(v))),
            ),
            Unranked(d) => (Some(TensorType::unranked(d).into()), None),
            Absent => (None, None),
        };
        tys.push(ty);
        consts.push(c);
    }
    let mut syms = SymGen::default();
    let mut cx = InferCx {
        inputs: &tys,
        consts: &consts,
        num_outputs: outputs,
        syms: &mut syms,
    };
    match op.into().infer(&mut cx) {
        Ok(out) => out
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(" "),
        Err(e) => format!("error: {e}"),
    }
}

const F: DType = DType::F32;
const I: DType = DType::I64;

#[test]
fn shape_and_size() {
    let x = || Ty(F, &["b", "3", "4"]);
    assert_eq!(infer(Shape::default(), vec![x()], 1), "i64[3]");
    let s = Shape {
        start: 1,
        end: Some(-1),
    };
    assert_eq!(infer(s, vec![x()], 1), "i64[1]");
    let s = Shape {
        start: 2,
        end: Some(1),
    };
    assert_eq!(infer(s, vec![x()], 1), "i64[0]");
    assert_eq!(infer(Shape::default(), vec![Unranked(F)], 1), "i64[rank_0]");
    assert_eq!(infer(Size::default(), vec![x()], 1), "i64[]");
}

#[test]
fn reshape() {
    let r = Reshape::default;
    let x = || Ty(F, &["2", "3", "4"]);
    assert_eq!(infer(r(), vec![x(), Ints(vec![4, -1])], 1), "f32[4,6]");
    assert_eq!(infer(r(), vec![x(), Ints(vec![0, -1])], 1), "f32[2,12]");
    assert_eq!(
        infer(r(), vec![x(), Ints(vec![5, -1])], 1),
        "error: cannot reshape 24 elements into a multiple of 5"
    );
    assert_eq!(
        infer(r(), vec![x(), Ints(vec![-1, -1])], 1),
        "error: the target shape has more than one -1"
    );
    let bert = || Ty(F, &["batch", "seq", "768"]);
    assert_eq!(
        infer(r(), vec![bert(), Ints(vec![0, 0, 12, 64])], 1),
        "f32[batch,seq,12,64]"
    );
    assert_eq!(
        infer(r(), vec![bert(), Ints(vec![0, -1, 768])], 1),
        "f32[batch,seq,768]"
    );
    assert_eq!(
        infer(r(), vec![bert(), Ints(vec![-1, 768])], 1),
        "f32[reshape_0,768]"
    );
    // A non-constant target of known length gives the rank.
    assert_eq!(
        infer(r(), vec![bert(), Ty(I, &["2"])], 1),
        "f32[reshape_0,reshape_1]"
    );
    assert_eq!(
        infer(r(), vec![Ty(F, &["b", "1", "1"]), Ty(I, &["1"])], 1),
        "f32[b]"
    );
    assert_eq!(
        infer(r(), vec![Ty(F, &["2", "3"]), Ty(I, &["1"])], 1),
        "f32[6]"
    );
    let z = Reshape { allowzero: 1 };
    assert_eq!(
        infer(z, vec![Ty(F, &["0", "3"]), Ints(vec![3, 0])], 1),
        "f32[3,0]"
    );
}

#[test]
fn flatten_squeeze_unsqueeze() {
    let x = || Ty(F, &["n", "3", "4", "5"]);
    assert_eq!(infer(Flatten::default(), vec![x()], 1), "f32[n,60]");
    assert_eq!(infer(Flatten { axis: 0 }, vec![x()], 1), "f32[1,flatten_0]");
    assert_eq!(
        infer(Flatten { axis: -1 }, vec![x()], 1),
        "f32[flatten_0,5]"
    );
    let y = || Ty(F, &["1", "3", "1"]);
    assert_eq!(infer(Squeeze::default(), vec![y()], 1), "f32[3]");
    assert_eq!(
        infer(Squeeze::default(), vec![y(), Ints(vec![-1])], 1),
        "f32[1,3]"
    );
    assert_eq!(
        infer(Squeeze::default(), vec![y(), Ints(vec![1])], 1),
        "error: cannot squeeze axis 1 of size 3"
    );
    assert_eq!(infer(Squeeze::default(), vec![x()], 1), "f32[*]");
    assert_eq!(
        infer(
            Unsqueeze::default(),
            vec![Ty(F, &["3", "4"]), Ints(vec![0, -1])],
            1
        ),
        "f32[1,3,4,1]"
    );
    assert_eq!(
        infer(
            Unsqueeze::default(),
            vec![Ty(F, &["3", "4"]), Ints(vec![2, 0])],
            1
        ),
        "f32[1,3,1,4]"
    );
}

#[test]
fn expand_constant_eye_identity() {
    assert_eq!(
        infer(
            Expand::default(),
            vec![Ty(F, &["3", "1"]), Ints(vec![2, 1, 6])],
            1
        ),
        "f32[2,3,6]"
    );
    assert_eq!(
        infer(
            Expand::default(),
            vec![Ty(F, &["3", "1"]), Ty(I, &["3"])],
            1
        ),
        "f32[expand_0,3,expand_1]"
    );
    let c = ConstantOfShape {
        value: Some(Arc::new(Tensor::vector(vec![1i32]))),
    };
    assert_eq!(infer(c, vec![Ints(vec![2, 3])], 1), "i32[2,3]");
    assert_eq!(
        infer(ConstantOfShape::default(), vec![Ty(I, &["2"])], 1),
        "f32[constant_0,constant_1]"
    );
    let e = EyeLike {
        dtype: Some(7),
        k: 0,
    };
    assert_eq!(infer(e, vec![Ty(F, &["3", "4"])], 1), "i64[3,4]");
    let seq = ValueType::Sequence(Box::new(TensorType::known(F, &[2]).into()));
    let tys = vec![Some(seq)];
    let mut syms = SymGen::default();
    let mut cx = InferCx {
        inputs: &tys,
        consts: &[None],
        num_outputs: 1,
        syms: &mut syms,
    };
    let out = Identity::default().infer(&mut cx).unwrap();
    assert_eq!(out[0].to_string(), "seq<f32[2]>");
}

#[test]
fn transpose_depth_space_tile() {
    let x = || Ty(F, &["n", "8", "h", "6"]);
    assert_eq!(infer(Transpose::default(), vec![x()], 1), "f32[6,h,8,n]");
    let t = Transpose {
        perm: Some(vec![0, 2, 3, 1]),
    };
    assert_eq!(infer(t, vec![x()], 1), "f32[n,h,6,8]");
    let d = DepthToSpace {
        blocksize: 2,
        mode: "DCR".into(),
    };
    assert_eq!(infer(d, vec![x()], 1), "f32[n,2,height_0,12]");
    let s = SpaceToDepth {
        blocksize: 2,
        mode: "CRD".into(),
    };
    assert_eq!(
        infer(s, vec![Ty(F, &["1", "2", "4", "6"])], 1),
        "f32[1,8,2,3]"
    );
    assert_eq!(
        infer(
            Tile::default(),
            vec![Ty(F, &["n", "3"]), Ints(vec![1, 2])],
            1
        ),
        "f32[n,6]"
    );
}

#[test]
fn concat_and_split() {
    let c = Concat { axis: 1 };
    assert_eq!(
        infer(c.clone(), vec![Ty(F, &["n", "3"]), Ty(F, &["2", "4"])], 1),
        "f32[2,7]"
    );
    assert_eq!(
        infer(c.clone(), vec![Ty(F, &["2", "s"]), Ty(F, &["2", "4"])], 1),
        "f32[2,concat_0]"
    );
    assert_eq!(
        infer(c, vec![Ty(F, &["2", "3"]), Ty(F, &["3", "4"])], 1),
        "error: input 1, axis 0: dims 2 and 3 differ"
    );
    let s = Split::default();
    assert_eq!(
        infer(s.clone(), vec![Ty(F, &["7", "2"])], 4),
        "f32[2,2] f32[2,2] f32[2,2] f32[1,2]"
    );
    assert_eq!(
        infer(s.clone(), vec![Ty(F, &["5"])], 4),
        "f32[split_0] f32[split_1] f32[split_2] f32[split_3]"
    );
    assert_eq!(
        infer(s.clone(), vec![Ty(F, &["6"]), Ints(vec![1, 5])], 2),
        "f32[1] f32[5]"
    );
    assert_eq!(
        infer(s, vec![Ty(F, &["6"]), Ints(vec![1, 4])], 2),
        "error: split sizes add up to 5, the axis has 6"
    );
}

#[test]
fn slice() {
    let x = || Ty(F, &["20", "10", "s"]);
    let sl = Slice::default;
    assert_eq!(
        infer(sl(), vec![x(), Ints(vec![0, 0]), Ints(vec![3, 10])], 1),
        "f32[3,10,s]"
    );
    assert_eq!(
        infer(
            sl(),
            vec![
                x(),
                Ints(vec![-1]),
                Ints(vec![i64::MIN]),
                Ints(vec![0]),
                Ints(vec![-1])
            ],
            1
        ),
        "f32[20,10,s]"
    );
    assert_eq!(
        infer(
            sl(),
            vec![
                x(),
                Ints(vec![1, 0]),
                Ints(vec![1000, 1000]),
                Ints(vec![1, 2]),
                Ints(vec![3, 1])
            ],
            1
        ),
        "f32[20,3,slice_0]"
    );
    assert_eq!(
        infer(
            sl(),
            vec![x(), Ints(vec![0]), Ints(vec![i64::MAX]), Ints(vec![-1])],
            1
        ),
        "f32[20,10,s]"
    );
    assert_eq!(
        infer(
            sl(),
            vec![x(), Ty(I, &["1"]), Ty(I, &["1"]), Ints(vec![1])],
            1
        ),
        "f32[20,slice_0,s]"
    );
}

#[test]
fn pad_and_crop() {
    let x = || Ty(F, &["1", "3", "4", "5"]);
    assert_eq!(
        infer(
            Pad::default(),
            vec![x(), Ints(vec![0, 0, 1, 2, 0, 0, 3, -1])],
            1
        ),
        "f32[1,3,8,6]"
    );
    assert_eq!(
        infer(
            Pad::default(),
            vec![x(), Ints(vec![1, 1]), Absent, Ints(vec![-1])],
            1
        ),
        "f32[1,3,4,7]"
    );
    assert_eq!(
        infer(Pad::default(), vec![x(), Ty(I, &["8"])], 1),
        "f32[pad_0,pad_1,pad_2,pad_3]"
    );
    let c = CenterCropPad {
        axes: Some(vec![-2, -1]),
    };
    assert_eq!(infer(c, vec![x(), Ints(vec![2, 9])], 1), "f32[1,3,2,9]");
    assert_eq!(
        infer(
            Col2Im::default(),
            vec![
                Ty(F, &["1", "10", "12"]),
                Ints(vec![5, 5]),
                Ints(vec![1, 5])
            ],
            1
        ),
        "f32[1,2,5,5]"
    );
}

#[test]
fn gathers() {
    let x = || Ty(F, &["5", "4", "3"]);
    assert_eq!(
        infer(Gather { axis: 1 }, vec![x(), Ty(I, &["2", "7"])], 1),
        "f32[5,2,7,3]"
    );
    assert_eq!(
        infer(Gather { axis: 0 }, vec![x(), Ty(I, &[])], 1),
        "f32[4,3]"
    );
    assert_eq!(
        infer(
            GatherElements { axis: 1 },
            vec![x(), Ty(I, &["5", "1", "3"])],
            1
        ),
        "f32[5,1,3]"
    );
    assert_eq!(
        infer(
            GatherND { batch_dims: 1 },
            vec![x(), Ty(I, &["5", "6", "1"])],
            1
        ),
        "f32[5,6,3]"
    );
    assert_eq!(
        infer(GatherND::default(), vec![x(), Ty(I, &["2", "2"])], 1),
        "f32[2,3]"
    );
}

#[test]
fn data_dependent_sizes() {
    assert_eq!(
        infer(NonZero::default(), vec![Ty(F, &["2", "3"])], 1),
        "i64[2,nonzero_0]"
    );
    assert_eq!(
        infer(Unique::default(), vec![Ty(F, &["2", "3"])], 4),
        "f32[unique_0] i64[unique_0] i64[6] i64[unique_0]"
    );
    let u = Unique {
        axis: Some(-1),
        sorted: 1,
    };
    assert_eq!(
        infer(u, vec![Ty(F, &["2", "3"])], 2),
        "f32[2,unique_0] i64[unique_0]"
    );
    let c = Compress { axis: Some(1) };
    assert_eq!(
        infer(c, vec![Ty(F, &["2", "3"]), Ty(DType::Bool, &["3"])], 1),
        "f32[2,compress_0]"
    );
    assert_eq!(
        infer(
            Range::default(),
            vec![Ints(vec![1]), Ints(vec![10]), Ints(vec![3])],
            1
        ),
        "i64[3]"
    );
    assert_eq!(
        infer(
            Range::default(),
            vec![Ints(vec![10]), Ints(vec![1]), Ints(vec![-3])],
            1
        ),
        "i64[3]"
    );
    assert_eq!(
        infer(
            Range::default(),
            vec![Ints(vec![1]), Ints(vec![10]), Ints(vec![0])],
            1
        ),
        "error: Range delta is 0"
    );
    assert_eq!(
        infer(
            Range::default(),
            vec![Ty(I, &[]), Ty(I, &[]), Ty(I, &[])],
            1
        ),
        "i64[range_0]"
    );
    assert_eq!(
        infer(
            OneHot::default(),
            vec![Ty(I, &["2", "3"]), Ints(vec![10]), Ty(F, &["2"])],
            1
        ),
        "f32[2,3,10]"
    );
}

#[test]
fn scatters_keep_the_data_type() {
    let x = || Ty(F, &["4", "3"]);
    assert_eq!(
        infer(
            ScatterElements::default(),
            vec![x(), Ty(I, &["1", "3"]), Ty(F, &["1", "3"])],
            1
        ),
        "f32[4,3]"
    );
    assert_eq!(
        infer(
            ScatterND::default(),
            vec![x(), Ty(I, &["1", "1"]), Ty(I, &["1", "3"])],
            1
        ),
        "error: updates have dtype i64, data has f32"
    );
    assert_eq!(
        infer(Trilu::default(), vec![Ty(F, &["3"])], 1),
        "error: Trilu takes a rank >= 2 input, got rank 1"
    );
}
