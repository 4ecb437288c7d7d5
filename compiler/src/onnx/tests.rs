//! Tests of the ONNX importer: models built as protobuf messages in code, imported, and checked in the IR text form.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiuzhou_ir::{Attr, DType, Tensor, ValueType};
use prost::Message;

use super::import::Importer;
use super::proto::{
    self, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TypeProto,
    ValueInfoProto, attribute_proto::AttributeType, tensor_shape_proto, type_proto,
};
use super::upgrade::{OnnxNode, UpgradeCx, upgrade};
use super::{ImportError, import_model, import_model_bytes, load_model, tensor_to_proto};

// ---------------------------------------------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------------------------------------------

/// A dim: a number is a size, a name a symbol, `?` an unknown dim.
fn dim(d: &str) -> proto::tensor_shape_proto::Dimension {
    use tensor_shape_proto::dimension::Value;
    let value = match d.parse::<i64>() {
        Ok(n) => Some(Value::DimValue(n)),
        Err(_) if d == "?" => None,
        Err(_) => Some(Value::DimParam(d.into())),
    };
    tensor_shape_proto::Dimension {
        value,
        ..Default::default()
    }
}

/// A tensor type; `dims == None` is an unknown rank.
fn tt(dtype: DType, dims: Option<&[&str]>) -> TypeProto {
    TypeProto {
        value: Some(type_proto::Value::TensorType(type_proto::Tensor {
            elem_type: dtype.onnx_code(),
            shape: dims.map(|d| proto::TensorShapeProto {
                dim: d.iter().map(|s| dim(s)).collect(),
            }),
        })),
        ..Default::default()
    }
}

fn vi(name: &str, t: TypeProto) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(t),
        ..Default::default()
    }
}

fn f32s(name: &str, dims: &[&str]) -> ValueInfoProto {
    vi(name, tt(DType::F32, Some(dims)))
}

fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

fn attr(name: &str, ty: AttributeType, set: impl FnOnce(&mut AttributeProto)) -> AttributeProto {
    let mut a = AttributeProto {
        name: name.into(),
        r#type: ty as i32,
        ..Default::default()
    };
    set(&mut a);
    a
}

fn int_attr(name: &str, v: i64) -> AttributeProto {
    attr(name, AttributeType::Int, |a| a.i = v)
}

fn ints_attr(name: &str, v: &[i64]) -> AttributeProto {
    attr(name, AttributeType::Ints, |a| a.ints = v.to_vec())
}

fn float_attr(name: &str, v: f32) -> AttributeProto {
    attr(name, AttributeType::Float, |a| a.f = v)
}

fn graph(
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    inits: Vec<proto::TensorProto>,
) -> GraphProto {
    GraphProto {
        name: "g".into(),
        node: nodes,
        input: inputs,
        output: outputs,
        initializer: inits,
        ..Default::default()
    }
}

fn model(opset: i64, g: GraphProto) -> ModelProto {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        graph: Some(g),
        ..Default::default()
    }
}

/// Imports `m` and prints the graph in the IR text form.
fn import_text(m: &ModelProto) -> String {
    match import_model(m, None) {
        Ok(model) => jiuzhou_ir::text::print(&model.graph),
        Err(e) => format!("error: {e}"),
    }
}

fn init(name: &str, t: Tensor) -> proto::TensorProto {
    tensor_to_proto(&t, name)
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/tiny_cnn")
        .join(name)
}

fn tmp_dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("jiuzhou-onnx-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

// ---------------------------------------------------------------------------------------------------------------
// Decoding and graph import
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn decodes_the_bundled_model() {
    let bytes = std::fs::read(fixture("model.onnx")).unwrap();
    let m = ModelProto::decode(bytes.as_slice()).unwrap();
    let g = m.graph.as_ref().unwrap();
    assert_eq!(g.input[0].name, "image");
    assert_eq!(g.output[0].name, "probs");
    assert!(g.node.iter().any(|n| n.op_type == "Conv"));
    assert_eq!(m.opset_import[0].version, 13);
    // Re-encoding gives the same message back.
    assert_eq!(ModelProto::decode(m.encode_to_vec().as_slice()).unwrap(), m);
}

#[test]
fn inputs_initializers_and_names() {
    // `w` is an initializer and also listed as an input (IR 3 style): it is a constant, not an input.
    // `a` is defined twice: the second definition is renamed and later uses read it.
    let m = model(
        14,
        graph(
            vec![
                node("Add", "add", &["x", "w"], &["a"], vec![]),
                node("Relu", "relu", &["a"], &["a"], vec![]),
                node("Neg", "", &["a"], &["y"], vec![]),
            ],
            vec![
                vi("x", tt(DType::F32, Some(&["batch", "?", "3"]))),
                f32s("w", &["3"]),
            ],
            vec![f32s("y", &["batch", "2", "3"])],
            vec![init("w", Tensor::vector(vec![1.0f32, 2.0, 3.0]))],
        ),
    );
    let expected = "\
graph g(%x: f32[batch,unk_0,3]) -> (%y) {
  const %w: f32[3] = [1.0, 2.0, 3.0]
  input %x
  %a: f32[batch,unk_0,3] = Add(%x, %w) @add
  %a_1: f32[batch,unk_0,3] = Relu(%a) @relu
  %y: f32[batch,2,3] = Neg(%a_1) @Neg_0
}
";
    assert_eq!(import_text(&m), expected);
}

#[test]
fn unknown_rank_inputs() {
    let m = model(
        14,
        graph(
            vec![node("Relu", "r", &["x"], &["y"], vec![])],
            vec![vi("x", tt(DType::F16, None))],
            vec![vi("y", tt(DType::F16, None))],
            vec![],
        ),
    );
    assert_eq!(
        import_text(&m),
        "graph g(%x: f16[*]) -> (%y) {\n  %y: f16[*] = Relu(%x) @r\n}\n"
    );
}

#[test]
fn constant_nodes() {
    let t = init("", Tensor::from_vec(vec![2], vec![5i32, 6]).unwrap());
    let mut sparse_values = init("", Tensor::vector(vec![7i64]));
    sparse_values.name = "sv".into();
    let sparse = proto::SparseTensorProto {
        values: Some(sparse_values),
        indices: Some(init("", Tensor::vector(vec![2i64]))),
        dims: vec![3],
    };
    let constants = [
        (
            "c_t",
            attr("value", AttributeType::Tensor, |a| a.t = Some(t)),
        ),
        ("c_f", float_attr("value_float", 0.5)),
        (
            "c_fs",
            attr("value_floats", AttributeType::Floats, |a| {
                a.floats = vec![1.0, 2.0]
            }),
        ),
        ("c_i", int_attr("value_int", -3)),
        ("c_is", ints_attr("value_ints", &[4, 5])),
        (
            "c_s",
            attr("value_string", AttributeType::String, |a| {
                a.s = b"hi".to_vec()
            }),
        ),
        (
            "c_ss",
            attr("value_strings", AttributeType::Strings, |a| {
                a.strings = vec![b"a".to_vec(), b"b".to_vec()]
            }),
        ),
        (
            "c_sp",
            attr("sparse_value", AttributeType::SparseTensor, |a| {
                a.sparse_tensor = Some(sparse)
            }),
        ),
    ];
    let nodes = constants
        .iter()
        .map(|(name, a)| node("Constant", name, &[], &[name], vec![a.clone()]))
        .collect();
    let outputs = vec![
        vi("c_t", tt(DType::I32, Some(&["2"]))),
        vi("c_sp", tt(DType::I64, Some(&["3"]))),
        vi("c_ss", tt(DType::String, Some(&["2"]))),
    ];
    let m = model(13, graph(nodes, vec![], outputs, vec![]));
    let expected = r#"graph g() -> (%c_t, %c_sp, %c_ss) {
  const %c_t: i32[2] = [5, 6]
  const %c_f: f32[] = [0.5]
  const %c_fs: f32[2] = [1.0, 2.0]
  const %c_i: i64[] = [-3]
  const %c_is: i64[2] = [4, 5]
  const %c_s: string[] = ["hi"]
  const %c_ss: string[2] = ["a", "b"]
  const %c_sp: i64[3] = [0, 0, 7]
}
"#;
    assert_eq!(import_text(&m), expected);
    // A Constant with no value is an error naming the node.
    let m = model(
        13,
        graph(
            vec![node("Constant", "k", &[], &["k"], vec![])],
            vec![],
            vec![],
            vec![],
        ),
    );
    assert!(
        import_text(&m).contains("node `k` (Constant)"),
        "{}",
        import_text(&m)
    );
}

#[test]
fn absent_optional_inputs_and_outputs() {
    // Clip(x, "", max): the empty name is an absent input. The unused second output of Dropout gets a name.
    let m = model(
        13,
        graph(
            vec![node(
                "LeakyRelu",
                "lr",
                &["x", ""],
                &["y"],
                vec![float_attr("alpha", 0.5)],
            )],
            vec![f32s("x", &["2"])],
            vec![f32s("y", &["2"])],
            vec![],
        ),
    );
    assert_eq!(
        import_text(&m),
        "graph g(%x: f32[2]) -> (%y) {\n  %y: f32[2] = LeakyRelu[alpha=0.5](%x) @lr\n}\n"
    );
}

#[test]
fn declared_types_refine_inferred_ones() {
    // Inference gives y the symbol `n`; the declared output says 4 (more specific) and value_info says the rank
    // of an intermediate. A conflict (declared 5 vs inferred 3) keeps the inferred size.
    let mut g = graph(
        vec![
            node("Relu", "r", &["x"], &["t"], vec![]),
            node("Neg", "n", &["t"], &["y"], vec![]),
        ],
        vec![f32s("x", &["n", "3"])],
        vec![f32s("y", &["4", "5"])],
        vec![],
    );
    g.value_info.push(f32s("t", &["m", "3"]));
    assert_eq!(
        import_text(&model(14, g)),
        "graph g(%x: f32[n,3]) -> (%y) {\n  %t: f32[n,3] = Relu(%x) @r\n  %y: f32[4,3] = Neg(%t) @n\n}\n"
    );
}

#[test]
fn nodes_out_of_order_are_sorted() {
    let m = model(
        14,
        graph(
            vec![
                node("Neg", "second", &["t"], &["y"], vec![]),
                node("Relu", "first", &["x"], &["t"], vec![]),
            ],
            vec![f32s("x", &["2"])],
            vec![f32s("y", &["2"])],
            vec![],
        ),
    );
    assert_eq!(
        import_text(&m),
        "graph g(%x: f32[2]) -> (%y) {\n  %t: f32[2] = Relu(%x) @first\n  %y: f32[2] = Neg(%t) @second\n}\n"
    );
    // A cycle is an error.
    let m = model(
        14,
        graph(
            vec![
                node("Neg", "a", &["u"], &["t"], vec![]),
                node("Neg", "b", &["t"], &["u"], vec![]),
            ],
            vec![],
            vec![f32s("u", &["2"])],
            vec![],
        ),
    );
    assert!(import_text(&m).contains("cycle"), "{}", import_text(&m));
}

#[test]
fn structural_errors_are_clear() {
    let undefined = model(
        14,
        graph(
            vec![node("Relu", "r", &["nope"], &["y"], vec![])],
            vec![],
            vec![f32s("y", &["2"])],
            vec![],
        ),
    );
    assert_eq!(
        import_text(&undefined),
        "error: node `r` (Relu): input `nope` is never defined"
    );
    let no_output = model(14, graph(vec![], vec![], vec![f32s("z", &["1"])], vec![]));
    assert!(import_text(&no_output).contains("output `z`"));
    let bad_attr = model(
        14,
        graph(
            vec![node(
                "Relu",
                "r",
                &["x"],
                &["y"],
                vec![int_attr("colour", 1)],
            )],
            vec![f32s("x", &["2"])],
            vec![f32s("y", &["2"])],
            vec![],
        ),
    );
    assert_eq!(
        import_text(&bad_attr),
        "error: node `r` (Relu): unknown attribute `colour`"
    );
    let untyped = model(
        14,
        graph(
            vec![],
            vec![ValueInfoProto {
                name: "x".into(),
                ..Default::default()
            }],
            vec![],
            vec![],
        ),
    );
    assert!(import_text(&untyped).contains("has no type"));
    let no_graph = ModelProto::default();
    assert!(import_text(&no_graph).contains("no graph"));
}

#[test]
fn every_unsupported_op_is_listed() {
    let mut m = model(
        17,
        graph(
            vec![
                node("FooOp", "foo", &["x"], &["a"], vec![]),
                node("Relu", "relu", &["a"], &["b"], vec![]),
                NodeProto {
                    domain: "ai.onnx.ml".into(),
                    ..node("LabelEncoder", "enc", &["b"], &["c"], vec![])
                },
            ],
            vec![f32s("x", &["2"])],
            vec![f32s("c", &["2"])],
            vec![],
        ),
    );
    m.opset_import.push(OperatorSetIdProto {
        domain: "ai.onnx.ml".into(),
        version: 3,
    });
    let e = import_model(&m, None).unwrap_err();
    let ImportError::UnsupportedOps(ops) = &e else {
        panic!("{e}")
    };
    assert_eq!(ops.len(), 2);
    assert_eq!(
        e.to_string(),
        "the model uses 2 unsupported op(s): FooOp (node `foo`, domain ai.onnx, opset 17), \
         LabelEncoder (node `enc`, domain ai.onnx.ml, opset 3)"
    );
}

#[test]
fn jiuzhou_own_ops_are_not_onnx_ops() {
    // FusedConv/FusedMatMul exist in the IR (the optimizer makes them) but a model file cannot use them.
    for own in jiuzhou_ir::ops::OWN_OPS {
        let m = model(
            17,
            graph(
                vec![node(own, "fused", &["x", "x"], &["y"], vec![])],
                vec![f32s("x", &["2", "2"])],
                vec![f32s("y", &["2", "2"])],
                vec![],
            ),
        );
        assert_eq!(
            import_text(&m),
            format!(
                "error: the model uses 1 unsupported op(s): {own} (node `fused`, domain ai.onnx, opset 17) \
                 [jiuzhou's own IR op, not an ONNX operator: model files cannot use it]"
            )
        );
    }
}

#[test]
fn inference_errors_name_the_node() {
    let m = model(
        14,
        graph(
            vec![node("Add", "add", &["x", "z"], &["y"], vec![])],
            vec![f32s("x", &["2"]), f32s("z", &["3"])],
            vec![f32s("y", &["2"])],
            vec![],
        ),
    );
    let e = import_text(&m);
    assert!(e.starts_with("error: node `add` (Add): "), "{e}");
}

#[test]
fn invalid_nodes_in_if_branches_get_unknown_shapes() {
    // The then branch adds shapes [2] and [3]: invalid, but only known to matter if the branch runs.
    let then_g = GraphProto {
        name: "then_g".into(),
        ..graph(
            vec![node("Add", "bad_add", &["x", "z"], &["t"], vec![])],
            vec![],
            vec![ValueInfoProto {
                name: "t".into(),
                ..Default::default()
            }],
            vec![],
        )
    };
    let else_g = GraphProto {
        name: "else_g".into(),
        ..graph(
            vec![node("Neg", "neg", &["x"], &["e"], vec![])],
            vec![],
            vec![ValueInfoProto {
                name: "e".into(),
                ..Default::default()
            }],
            vec![],
        )
    };
    let m = model(
        16,
        graph(
            vec![node(
                "If",
                "if",
                &["c"],
                &["y"],
                vec![
                    attr("then_branch", AttributeType::Graph, |a| a.g = Some(then_g)),
                    attr("else_branch", AttributeType::Graph, |a| a.g = Some(else_g)),
                ],
            )],
            vec![
                vi("c", tt(DType::Bool, Some(&[]))),
                f32s("x", &["2"]),
                f32s("z", &["3"]),
            ],
            vec![vi("y", tt(DType::F32, None))],
            vec![],
        ),
    );
    let text = import_text(&m);
    assert!(text.contains("%t: f32[*] = Add(%x, %z) @bad_add"), "{text}");
}

#[test]
fn local_functions_are_inlined() {
    let alpha_ref = AttributeProto {
        name: "alpha".into(),
        ref_attr_name: "a".into(),
        r#type: AttributeType::Float as i32,
        ..Default::default()
    };
    let f = proto::FunctionProto {
        name: "Act".into(),
        domain: "custom".into(),
        input: vec!["X".into()],
        output: vec!["Y".into()],
        attribute: vec!["a".into()],
        node: vec![
            node("LeakyRelu", "lr", &["X"], &["T"], vec![alpha_ref]),
            node("Neg", "neg", &["T"], &["Y"], vec![]),
        ],
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 16,
        }],
        ..Default::default()
    };
    let call = |name: &str, i: &str, o: &str, a: f32| NodeProto {
        domain: "custom".into(),
        ..node("Act", name, &[i], &[o], vec![float_attr("a", a)])
    };
    let mut m = model(
        16,
        graph(
            vec![call("c1", "x", "h", 0.5), call("c2", "h", "y", 0.25)],
            vec![f32s("x", &["2"])],
            vec![f32s("y", &["2"])],
            vec![],
        ),
    );
    m.opset_import.push(OperatorSetIdProto {
        domain: "custom".into(),
        version: 1,
    });
    m.functions.push(f);
    let expected = "\
graph g(%x: f32[2]) -> (%y) {
  %\"c1/T\": f32[2] = LeakyRelu[alpha=0.5](%x) @\"c1/lr\"
  %h: f32[2] = Neg(%\"c1/T\") @\"c1/neg\"
  %\"c2/T\": f32[2] = LeakyRelu[alpha=0.25](%h) @\"c2/lr\"
  %y: f32[2] = Neg(%\"c2/T\") @\"c2/neg\"
}
";
    assert_eq!(import_text(&m), expected);
    // Unsupported ops inside a function body are reported.
    m.functions[0].node[1].op_type = "NoSuchOp".into();
    assert!(import_text(&m).contains("NoSuchOp"), "{}", import_text(&m));
}

// ---------------------------------------------------------------------------------------------------------------
// Attributes and subgraphs
// ---------------------------------------------------------------------------------------------------------------

fn importer_with_outer(outer: &[(&str, ValueType, Option<Tensor>)]) -> Importer<'static> {
    let mut imp = Importer::new(None, 18);
    let mut names = HashMap::new();
    let mut g = jiuzhou_ir::Graph::new("outer");
    for (name, ty, t) in outer {
        let id = match t {
            Some(t) => g.add_constant(*name, Arc::new(t.clone())),
            None => g.add_value(*name, ty.clone()),
        };
        names.insert(name.to_string(), id);
    }
    imp.push_for_test(g, names);
    imp
}

#[test]
fn every_attribute_kind() {
    let mut imp = importer_with_outer(&[]);
    let t = init("t", Tensor::vector(vec![1.5f32]));
    let sub = graph(vec![], vec![], vec![], vec![]);
    let cases: Vec<(AttributeProto, &str)> = vec![
        (float_attr("f", 0.25), "float"),
        (int_attr("i", 3), "int"),
        (
            attr("s", AttributeType::String, |a| a.s = b"abc".to_vec()),
            "string",
        ),
        (
            attr("t", AttributeType::Tensor, |a| a.t = Some(t.clone())),
            "tensor",
        ),
        (
            attr("g", AttributeType::Graph, |a| a.g = Some(sub.clone())),
            "graph",
        ),
        (
            attr("fs", AttributeType::Floats, |a| a.floats = vec![1.0]),
            "floats",
        ),
        (ints_attr("is", &[1, 2]), "ints"),
        (
            attr("ss", AttributeType::Strings, |a| {
                a.strings = vec![b"x".to_vec()]
            }),
            "strings",
        ),
        (
            attr("ts", AttributeType::Tensors, |a| {
                a.tensors = vec![t.clone()]
            }),
            "tensors",
        ),
        (
            attr("gs", AttributeType::Graphs, |a| {
                a.graphs = vec![sub.clone()]
            }),
            "graphs",
        ),
        (
            attr("tp", AttributeType::TypeProto, |a| {
                a.tp = Some(tt(DType::I64, Some(&["n"])))
            }),
            "type",
        ),
        (
            attr("tps", AttributeType::TypeProtos, |a| {
                a.type_protos = vec![tt(DType::Bool, None)]
            }),
            "types",
        ),
        (
            attr("sp", AttributeType::SparseTensor, |a| {
                a.sparse_tensor = Some(proto::SparseTensorProto {
                    values: Some(t.clone()),
                    indices: Some(init("", Tensor::vector(vec![1i64]))),
                    dims: vec![2],
                })
            }),
            "tensor",
        ),
        // No type field (IR version 1): guessed from the field that is set.
        (
            AttributeProto {
                name: "old".into(),
                ints: vec![1],
                ..Default::default()
            },
            "ints",
        ),
    ];
    for (a, kind) in cases {
        let v = imp.convert_attr_for_test(&a).unwrap();
        assert_eq!(v.kind(), kind, "{}", a.name);
    }
    assert_eq!(
        imp.convert_attr_for_test(&float_attr("f", 0.25)).unwrap(),
        Attr::Float(0.25)
    );
    assert_eq!(
        imp.convert_attr_for_test(&attr("s", AttributeType::String, |a| a.s = b"abc".to_vec()))
            .unwrap(),
        Attr::String("abc".into())
    );
    let Attr::Type(ty) = imp
        .convert_attr_for_test(&attr("tp", AttributeType::TypeProto, |a| {
            a.tp = Some(tt(DType::I64, Some(&["n"])))
        }))
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(ty.to_string(), "i64[n]");
    // A reference to a function attribute outside a function is an error.
    let r = attr("r", AttributeType::Int, |a| {
        a.ref_attr_name = "alpha".into()
    });
    assert!(imp.convert_attr_for_test(&r).is_err());
}

#[test]
fn subgraphs_capture_outer_values() {
    let f = |dims: &[usize]| ValueType::Tensor(jiuzhou_ir::TensorType::known(DType::F32, dims));
    let mut imp = importer_with_outer(&[
        ("x", f(&[2]), None),
        ("w", f(&[2]), Some(Tensor::vector(vec![1.0f32, 2.0]))),
    ]);
    // The inner graph reads `x` (a capture), `w` (an outer constant, copied) and a nested graph reads `x` too.
    let nested = graph(
        vec![node("Neg", "nn", &["x"], &["z"], vec![])],
        vec![],
        vec![f32s("z", &["2"])],
        vec![],
    );
    let inner = graph(
        vec![
            node("Add", "add", &["x", "w"], &["s"], vec![]),
            node("Relu", "holder", &["s"], &["r"], vec![]),
        ],
        vec![],
        vec![f32s("r", &["2"])],
        vec![],
    );
    let g = imp.import_subgraph_for_test(&inner).unwrap();
    assert_eq!(
        jiuzhou_ir::text::print(&g),
        "graph g() -> (%r) {\n  capture %x: f32[2]\n  const %w: f32[2] = [1.0, 2.0]\n  \
         %s: f32[2] = Add(%x, %w) @add\n  %r: f32[2] = Relu(%s) @holder\n}\n"
    );
    // Two levels down: the middle graph captures `x` as well so the inner capture resolves in it.
    let middle = graph(
        vec![node("Neg", "m", &["x"], &["q"], vec![])],
        vec![],
        vec![f32s("q", &["2"])],
        vec![],
    );
    imp.push_subgraph_for_test(&middle);
    let inner = imp.import_subgraph_for_test(&nested).unwrap();
    let middle = imp.pop_for_test();
    assert_eq!(inner.captures.len(), 1);
    assert_eq!(middle.captures.len(), 1);
    assert_eq!(middle.value(middle.captures[0]).name, "x");
    assert_eq!(inner.value(inner.captures[0]).name, "x");
}

#[test]
fn subgraph_inputs_take_types_from_the_owner() {
    // A Loop body whose inputs declare no types gets them from the Loop's inputs.
    let body = graph(
        vec![node("Neg", "neg", &["v"], &["v2"], vec![])],
        vec![
            ValueInfoProto {
                name: "i".into(),
                ..Default::default()
            },
            ValueInfoProto {
                name: "c".into(),
                ..Default::default()
            },
            // An undefined element type (0) counts as no type.
            vi("v", {
                let mut t = tt(DType::F32, None);
                if let Some(type_proto::Value::TensorType(tt)) = &mut t.value {
                    tt.elem_type = 0;
                }
                t
            }),
        ],
        vec![
            vi("c", tt(DType::Bool, Some(&[]))),
            ValueInfoProto {
                name: "v2".into(),
                ..Default::default()
            },
        ],
        vec![],
    );
    let f = ValueType::Tensor(jiuzhou_ir::TensorType::known(DType::F32, &[3]));
    let mut imp = importer_with_outer(&[("v0", f, None)]);
    let loop_node = node(
        "Loop",
        "loop",
        &["", "", "v0"],
        &["vout"],
        vec![attr("body", AttributeType::Graph, |a| a.g = Some(body))],
    );
    let hints = imp.hints_for_test(&loop_node);
    let g = imp
        .import_subgraph_with_hints_for_test(loop_node.attribute[0].g.as_ref().unwrap(), &hints)
        .unwrap();
    assert_eq!(
        jiuzhou_ir::text::print(&g),
        "graph g(%i: i64[], %c: bool[], %v: f32[3]) -> (%c, %v2) {\n  %v2: f32[3] = Neg(%v) @neg\n}\n"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// External data and malformed files
// ---------------------------------------------------------------------------------------------------------------

fn external_model(location: &str) -> ModelProto {
    let mut w = proto::TensorProto {
        name: "w".into(),
        dims: vec![2],
        data_type: DType::F32.onnx_code(),
        data_location: proto::tensor_proto::DataLocation::External as i32,
        ..Default::default()
    };
    w.external_data.push(proto::StringStringEntryProto {
        key: "location".into(),
        value: location.into(),
    });
    model(
        14,
        graph(
            vec![node("Add", "add", &["x", "w"], &["y"], vec![])],
            vec![f32s("x", &["2"])],
            vec![f32s("y", &["2"])],
            vec![w],
        ),
    )
}

#[test]
fn external_data_stays_in_the_model_folder() {
    let root = tmp_dir("external");
    let dir = root.join("model");
    std::fs::create_dir_all(&dir).unwrap();
    let data: Vec<u8> = [3.0f32, 4.0].iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(dir.join("w.bin"), &data).unwrap();
    std::fs::write(root.join("outside.bin"), &data).unwrap();
    let good = dir.join("good.onnx");
    std::fs::write(&good, external_model("w.bin").encode_to_vec()).unwrap();
    let m = load_model(&good).unwrap();
    let w = m.graph.values.iter().find(|v| v.name == "w").unwrap();
    assert_eq!(
        w.constant.as_ref().unwrap().as_slice::<f32>().unwrap(),
        &[3.0, 4.0]
    );

    let outside = root.join("outside.bin");
    for location in ["../outside.bin", outside.to_str().unwrap()] {
        let path = dir.join("bad.onnx");
        std::fs::write(&path, external_model(location).encode_to_vec()).unwrap();
        let e = load_model(&path).unwrap_err();
        assert!(matches!(e, ImportError::ExternalData(_)), "{e}");
    }
    // Bytes without a folder cannot use external data.
    let e = import_model_bytes(&external_model("w.bin").encode_to_vec(), None).unwrap_err();
    assert!(e.to_string().contains("external data"), "{e}");
}

/// A tiny deterministic generator (xorshift) so the fuzz loop needs no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn malformed_models_never_panic() {
    let bytes = std::fs::read(fixture("model.onnx")).unwrap();
    let base = fixture("");
    let check = |b: &[u8]| {
        // Ok or Err are both fine; a panic fails the test.
        let _ = import_model_bytes(b, Some(&base));
    };
    let step = (bytes.len() / 300).max(1);
    for cut in (0..bytes.len()).step_by(step) {
        check(&bytes[..cut]);
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..300 {
        let mut b = bytes.clone();
        for _ in 0..1 + rng.next() % 8 {
            let i = (rng.next() as usize) % b.len();
            b[i] = rng.next() as u8;
        }
        check(&b);
    }
    assert!(matches!(
        import_model_bytes(b"this is not an ONNX model\n", None),
        Err(ImportError::Decode(_))
    ));
}

// ---------------------------------------------------------------------------------------------------------------
// Opset upgrades
// ---------------------------------------------------------------------------------------------------------------

/// Records the constants and names an upgrade asks for.
#[derive(Default)]
struct MockCx {
    types: HashMap<String, ValueType>,
    constants: HashMap<String, Tensor>,
    fresh: usize,
}

impl UpgradeCx for MockCx {
    fn constant(&mut self, hint: &str, tensor: Tensor) -> String {
        self.constants.insert(hint.to_string(), tensor);
        hint.to_string()
    }
    fn fresh_name(&mut self, hint: &str) -> String {
        self.fresh += 1;
        hint.to_string()
    }
    fn value_type(&self, name: &str) -> Option<ValueType> {
        self.types.get(name).cloned()
    }
    fn constant_value(&self, name: &str) -> Option<Arc<Tensor>> {
        self.constants.get(name).cloned().map(Arc::new)
    }
}

fn onnx_node(op: &str, inputs: &[&str], outputs: &[&str], attrs: &[(&str, Attr)]) -> OnnxNode {
    OnnxNode::new(
        "n",
        op,
        inputs
            .iter()
            .map(|s| {
                if s.is_empty() {
                    None
                } else {
                    Some(s.to_string())
                }
            })
            .collect(),
        outputs.iter().map(|s| s.to_string()).collect(),
        attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    )
}

/// Runs an upgrade and prints the resulting nodes and constants compactly.
fn up(node: OnnxNode, opset: i64, cx: &mut MockCx) -> String {
    match upgrade(node, opset, cx) {
        Err(e) => format!("error: {e}"),
        Ok(nodes) => {
            let mut out: Vec<String> = nodes
                .iter()
                .map(|n| {
                    let ins: Vec<&str> = n
                        .inputs
                        .iter()
                        .map(|i| i.as_deref().unwrap_or("_"))
                        .collect();
                    let attrs: Vec<String> =
                        n.attrs.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
                    format!(
                        "{}[{}]({}) -> {}",
                        n.op_type,
                        attrs.join(","),
                        ins.join(","),
                        n.outputs.join(",")
                    )
                })
                .collect();
            let mut consts: Vec<String> = cx
                .constants
                .iter()
                .map(|(k, t)| format!("{k}={:?}", t))
                .collect();
            consts.sort();
            out.extend(consts);
            out.join("; ")
        }
    }
}

fn f32_type(dims: &[usize]) -> ValueType {
    ValueType::Tensor(jiuzhou_ir::TensorType::known(DType::F32, dims))
}

#[test]
fn upgrades_attributes_to_inputs() {
    let cases: Vec<(OnnxNode, i64, &str)> = vec![
        (
            onnx_node(
                "Reshape",
                &["x"],
                &["y"],
                &[("shape", Attr::Ints(vec![2, -1]))],
            ),
            4,
            "Reshape[](x,n_shape) -> y; n_shape=Tensor(i64[2] [2, -1])",
        ),
        (
            onnx_node(
                "Unsqueeze",
                &["x"],
                &["y"],
                &[("axes", Attr::Ints(vec![0]))],
            ),
            11,
            "Unsqueeze[](x,n_axes) -> y; n_axes=Tensor(i64[1] [0])",
        ),
        (
            onnx_node("Unsqueeze", &["x", "a"], &["y"], &[]),
            13,
            "Unsqueeze[](x,a) -> y",
        ),
        (
            onnx_node(
                "ReduceMean",
                &["x"],
                &["y"],
                &[("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(0))],
            ),
            17,
            "ReduceMean[keepdims=Int(0)](x,n_axes) -> y; n_axes=Tensor(i64[1] [1])",
        ),
        (
            onnx_node(
                "ReduceSum",
                &["x"],
                &["y"],
                &[("axes", Attr::Ints(vec![1]))],
            ),
            13,
            "ReduceSum[axes=Ints([1])](x) -> y",
        ),
        (
            onnx_node(
                "Split",
                &["x"],
                &["a", "b"],
                &[("split", Attr::Ints(vec![1, 2]))],
            ),
            11,
            "Split[](x,n_split) -> a,b; n_split=Tensor(i64[2] [1, 2])",
        ),
        (
            onnx_node("Split", &["x"], &["a", "b"], &[]),
            13,
            "Split[num_outputs=Int(2)](x) -> a,b",
        ),
        (
            onnx_node(
                "Slice",
                &["x"],
                &["y"],
                &[
                    ("starts", Attr::Ints(vec![1])),
                    ("ends", Attr::Ints(vec![3])),
                ],
            ),
            9,
            "Slice[](x,n_starts,n_ends) -> y; n_ends=Tensor(i64[1] [3]); n_starts=Tensor(i64[1] [1])",
        ),
        (
            onnx_node("TopK", &["x"], &["v", "i"], &[("k", Attr::Int(2))]),
            9,
            "TopK[](x,n_k) -> v,i; n_k=Tensor(i64[1] [2])",
        ),
        (
            onnx_node("Clip", &["x"], &["y"], &[("min", Attr::Float(-1.0))]),
            6,
            "Clip[](x,n_min) -> y; n_min=Tensor(f32[] [-1])",
        ),
        (
            onnx_node(
                "Pad",
                &["x"],
                &["y"],
                &[
                    ("pads", Attr::Ints(vec![0, 1])),
                    ("value", Attr::Float(2.0)),
                    ("mode", Attr::String("constant".into())),
                ],
            ),
            2,
            "Pad[mode=String(\"constant\")](x,n_pads,n_value) -> y; n_pads=Tensor(i64[2] [0, 1]); n_value=Tensor(f32[] [2])",
        ),
        (
            onnx_node(
                "Dropout",
                &["x"],
                &["y", "m"],
                &[("ratio", Attr::Float(0.25)), ("is_test", Attr::Int(1))],
            ),
            6,
            "Dropout[](x,n_ratio) -> y,m; n_ratio=Tensor(f32[] [0.25])",
        ),
        (
            onnx_node("DFT", &["x", ""], &["y"], &[("axis", Attr::Int(2))]),
            19,
            "DFT[](x,_,n_axis) -> y; n_axis=Tensor(i64[] [2])",
        ),
    ];
    for (node, opset, want) in cases {
        let mut cx = MockCx::default();
        assert_eq!(up(node, opset, &mut cx), want);
    }
}

#[test]
fn upgrades_removed_and_renamed_attributes() {
    let cases: Vec<(OnnxNode, i64, &str)> = vec![
        (
            onnx_node(
                "BatchNormalization",
                &["x", "s", "b", "m", "v"],
                &["y", "m2", "v2", "sm", "sv"],
                &[
                    ("spatial", Attr::Int(1)),
                    ("is_test", Attr::Int(1)),
                    ("consumed_inputs", Attr::Ints(vec![0])),
                ],
            ),
            6,
            "BatchNormalization[](x,s,b,m,v) -> y",
        ),
        (
            onnx_node(
                "BatchNormalization",
                &["x", "s", "b", "m", "v"],
                &["y"],
                &[("spatial", Attr::Int(0))],
            ),
            7,
            "error: BatchNormalization with spatial=0 is not supported",
        ),
        (
            onnx_node(
                "Gemm",
                &["a", "b", "c"],
                &["y"],
                &[("broadcast", Attr::Int(1))],
            ),
            6,
            "Gemm[](a,b,c) -> y",
        ),
        (
            onnx_node(
                "Cast",
                &["x"],
                &["y"],
                &[("to", Attr::String("float16".into()))],
            ),
            5,
            "Cast[to=Int(10)](x) -> y",
        ),
        (
            onnx_node("Concat", &["a", "b"], &["y"], &[]),
            3,
            "Concat[axis=Int(1)](a,b) -> y",
        ),
        (
            onnx_node(
                "Scatter",
                &["x", "i", "u"],
                &["y"],
                &[("axis", Attr::Int(1))],
            ),
            10,
            "ScatterElements[axis=Int(1)](x,i,u) -> y",
        ),
        (
            onnx_node(
                "GridSample",
                &["x", "g"],
                &["y"],
                &[("mode", Attr::String("bicubic".into()))],
            ),
            16,
            "GridSample[mode=String(\"cubic\")](x,g) -> y",
        ),
        (
            onnx_node("Scan", &["", "s", "x"], &["y"], &[]),
            8,
            "error: Scan before opset 9 is only supported with a batch of one (a known leading dim of 1)",
        ),
        (
            onnx_node("Scan", &["len", "s", "x"], &["y"], &[]),
            8,
            "error: Scan before opset 9 with `sequence_lens` is not supported",
        ),
    ];
    for (node, opset, want) in cases {
        let mut cx = MockCx::default();
        assert_eq!(up(node, opset, &mut cx), want);
    }
}

#[test]
fn upgrades_upsample_and_old_resize() {
    let mut cx = MockCx::default();
    assert_eq!(
        up(
            onnx_node(
                "Upsample",
                &["x"],
                &["y"],
                &[("scales", Attr::Floats(vec![1.0, 1.0, 2.0, 2.0]))]
            ),
            8,
            &mut cx
        ),
        "Resize[coordinate_transformation_mode=String(\"asymmetric\"),mode=String(\"nearest\"),\
         nearest_mode=String(\"floor\")](x,_,n_scales) -> y; n_scales=Tensor(f32[4] [1, 1, 2, 2])"
    );
    let mut cx = MockCx::default();
    assert_eq!(
        up(
            onnx_node(
                "Upsample",
                &["x", "s"],
                &["y"],
                &[("mode", Attr::String("linear".into()))]
            ),
            9,
            &mut cx
        ),
        "Resize[coordinate_transformation_mode=String(\"asymmetric\"),mode=String(\"linear\")](x,_,s) -> y"
    );
    let mut cx = MockCx::default();
    assert_eq!(
        up(
            onnx_node(
                "Upsample",
                &["x"],
                &["y"],
                &[
                    ("height_scale", Attr::Float(2.0)),
                    ("width_scale", Attr::Float(3.0)),
                    ("mode", Attr::String("bilinear".into()))
                ]
            ),
            1,
            &mut cx
        ),
        "Resize[coordinate_transformation_mode=String(\"asymmetric\"),mode=String(\"linear\")](x,_,n_scales) -> y; \
         n_scales=Tensor(f32[4] [1, 1, 2, 3])"
    );
    let mut cx = MockCx::default();
    assert_eq!(
        up(onnx_node("Resize", &["x", "s"], &["y"], &[]), 10, &mut cx),
        "Resize[coordinate_transformation_mode=String(\"asymmetric\"),nearest_mode=String(\"floor\")](x,_,s) -> y"
    );
    // Opset 11 wrote empty roi/scales when sizes are given; they become absent.
    let mut cx = MockCx::default();
    cx.constants.insert(
        "roi".into(),
        Tensor::from_vec(vec![0], Vec::<f32>::new()).unwrap(),
    );
    cx.constants.insert(
        "sc".into(),
        Tensor::from_vec(vec![0], Vec::<f32>::new()).unwrap(),
    );
    let n = onnx_node("Resize", &["x", "roi", "sc", "sizes"], &["y"], &[]);
    let nodes = upgrade(n, 11, &mut cx).unwrap();
    assert_eq!(
        nodes[0].inputs,
        vec![Some("x".into()), None, None, Some("sizes".into())]
    );
}

#[test]
fn upgrades_softmax_coercion() {
    // Axis is the last one, or every later dim is 1: only the axis changes.
    let mut cx = MockCx::default();
    cx.types.insert("x".into(), f32_type(&[1, 1000, 1, 1]));
    assert_eq!(
        up(onnx_node("Softmax", &["x"], &["y"], &[]), 9, &mut cx),
        "Softmax[axis=Int(1)](x) -> y"
    );
    let mut cx = MockCx::default();
    cx.types.insert("x".into(), f32_type(&[2, 3]));
    assert_eq!(
        up(onnx_node("LogSoftmax", &["x"], &["y"], &[]), 11, &mut cx),
        "LogSoftmax[axis=Int(1)](x) -> y"
    );
    // Otherwise Flatten → op → Reshape back (a constant shape when the input shape is known).
    let mut cx = MockCx::default();
    cx.types.insert("x".into(), f32_type(&[2, 3, 4]));
    assert_eq!(
        up(
            onnx_node("Hardmax", &["x"], &["y"], &[("axis", Attr::Int(1))]),
            11,
            &mut cx
        ),
        "Flatten[axis=Int(1)](x) -> n_flat; Hardmax[axis=Int(-1)](n_flat) -> n_2d; \
         Reshape[](n_2d,n_shape) -> y; n_shape=Tensor(i64[3] [2, 3, 4])"
    );
    // Unknown shape: the shape is computed.
    let mut cx = MockCx::default();
    assert_eq!(
        up(onnx_node("Softmax", &["x"], &["y"], &[]), 11, &mut cx),
        "Shape[](x) -> n_shape; Flatten[axis=Int(1)](x) -> n_flat; Softmax[axis=Int(-1)](n_flat) -> n_2d; \
         Reshape[](n_2d,n_shape) -> y"
    );
    // Opset 13 is left alone.
    let mut cx = MockCx::default();
    assert_eq!(
        up(onnx_node("Softmax", &["x"], &["y"], &[]), 13, &mut cx),
        "Softmax[](x) -> y"
    );
}

#[test]
fn upgrades_scan_8_with_a_batch_of_one() {
    let mut cx = MockCx::default();
    cx.types.insert("s".into(), f32_type(&[1, 2]));
    cx.types.insert("x".into(), f32_type(&[1, 3, 2]));
    assert_eq!(
        up(
            onnx_node(
                "Scan",
                &["", "s", "x"],
                &["y", "z"],
                &[("directions", Attr::Ints(vec![0]))]
            ),
            8,
            &mut cx
        ),
        "Squeeze[](s,n_batch_axis) -> n_in0; Squeeze[](x,n_batch_axis) -> n_in1; \
         Scan[scan_input_directions=Ints([0])](n_in0,n_in1) -> n_out0,n_out1; \
         Unsqueeze[](n_out0,n_batch_axis) -> y; Unsqueeze[](n_out1,n_batch_axis) -> z; \
         n_batch_axis=Tensor(i64[1] [0])"
    );
}

#[test]
fn upgrades_tile_1() {
    let mut cx = MockCx::default();
    cx.types.insert("x".into(), f32_type(&[2, 3]));
    cx.constants.insert("t".into(), Tensor::scalar(4i64));
    cx.constants.insert("a".into(), Tensor::scalar(-1i64));
    let nodes = upgrade(onnx_node("Tile", &["x", "t", "a"], &["y"], &[]), 1, &mut cx).unwrap();
    assert_eq!(
        nodes[0].inputs,
        vec![Some("x".into()), Some("n_repeats".into())]
    );
    assert_eq!(
        cx.constants["n_repeats"].as_slice::<i64>().unwrap(),
        &[1, 4]
    );
    let mut cx = MockCx::default();
    assert!(upgrade(onnx_node("Tile", &["x", "t", "a"], &["y"], &[]), 5, &mut cx).is_err());
}

#[test]
fn upgrades_legacy_broadcast_and_group_norm() {
    let mut cx = MockCx::default();
    cx.types.insert("a".into(), f32_type(&[2, 3, 4, 5]));
    cx.types.insert("b".into(), f32_type(&[3]));
    assert_eq!(
        up(
            onnx_node(
                "Add",
                &["a", "b"],
                &["y"],
                &[("broadcast", Attr::Int(1)), ("axis", Attr::Int(1))]
            ),
            6,
            &mut cx
        ),
        "Unsqueeze[](b,n_axes) -> n_b; Add[](a,n_b) -> y; n_axes=Tensor(i64[2] [1, 2])"
    );
    let mut cx = MockCx::default();
    cx.types.insert("a".into(), f32_type(&[2, 3]));
    cx.types.insert("b".into(), f32_type(&[3]));
    assert_eq!(
        up(
            onnx_node("Mul", &["a", "b"], &["y"], &[("broadcast", Attr::Int(1))]),
            5,
            &mut cx
        ),
        "Mul[](a,b) -> y"
    );

    let mut cx = MockCx::default();
    cx.types.insert("x".into(), f32_type(&[1, 4, 2]));
    cx.constants
        .insert("s".into(), Tensor::vector(vec![1.0f32, 2.0]));
    cx.constants
        .insert("b".into(), Tensor::vector(vec![0.5f32, 0.25]));
    let n = onnx_node(
        "GroupNormalization",
        &["x", "s", "b"],
        &["y"],
        &[("num_groups", Attr::Int(2))],
    );
    let nodes = upgrade(n, 18, &mut cx).unwrap();
    assert_eq!(nodes[0].inputs[1].as_deref(), Some("s_per_channel"));
    assert_eq!(
        cx.constants["s_per_channel"].as_slice::<f32>().unwrap(),
        &[1.0, 1.0, 2.0, 2.0]
    );
    assert_eq!(
        cx.constants["b_per_channel"].as_slice::<f32>().unwrap(),
        &[0.5, 0.5, 0.25, 0.25]
    );
}
