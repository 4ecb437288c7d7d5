//! Tests of the text form: round trips over every dtype, attribute kind and graph shape, a golden text, parse
//! errors with their positions, and fuzzing for panics.
//!
//! Expected texts live in this file; run with `UPDATE_EXPECT=1` to rewrite them after a deliberate change.

use std::sync::Arc;

use half::{bf16, f16};

use super::parse::{parse_attr, parse_type};
use super::print::print_attr;
use super::*;
use crate::tensor::Data;
use crate::{Attr, Attrs, DType, Graph, Node, Op, Tensor, ValueId, ValueType};

/// A type from its text form.
fn ty(s: &str) -> ValueType {
    parse_type(s).unwrap_or_else(|e| panic!("bad type `{s}`: {e}"))
}

/// An op from its name and attributes.
fn op(name: &str, attrs: Vec<(&str, Attr)>) -> Op {
    let attrs: Attrs = attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    Op::from_attrs(name, attrs)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .unwrap_or_else(|| panic!("no op {name}"))
}

/// Builds test graphs in the order the parser creates values (inputs, captures, constants, node outputs), so that
/// a parsed graph equals the built one.
struct G(Graph);

impl G {
    fn new(name: &str) -> G {
        G(Graph::new(name))
    }
    fn input(&mut self, name: &str, t: &str) -> ValueId {
        let id = self.0.add_value(name, ty(t));
        self.0.inputs.push(id);
        id
    }
    fn capture(&mut self, name: &str, t: &str) -> ValueId {
        let id = self.0.add_value(name, ty(t));
        self.0.captures.push(id);
        id
    }
    fn constant(&mut self, name: &str, t: Tensor) -> ValueId {
        self.0.add_constant(name, Arc::new(t))
    }
    fn node(
        &mut self,
        name: &str,
        op: Op,
        inputs: &[Option<ValueId>],
        outs: &[(&str, &str)],
    ) -> Vec<ValueId> {
        let outputs: Vec<ValueId> = outs
            .iter()
            .map(|(n, t)| self.0.add_value(*n, ty(t)))
            .collect();
        self.0.nodes.push(Node {
            name: name.to_string(),
            op,
            inputs: inputs.to_vec(),
            outputs: outputs.clone(),
        });
        outputs
    }
    fn output(&mut self, id: ValueId) {
        self.0.outputs.push(id);
    }
    fn done(self) -> Graph {
        self.0
            .verify()
            .unwrap_or_else(|e| panic!("test graph does not verify: {e}"));
        self.0
    }
}

/// Prints, parses and prints again; the texts must be identical. Returns the text and the parsed graph.
fn round_trip(g: &Graph) -> (String, Graph) {
    let text = print(g);
    let back = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let again = print(&back);
    assert_eq!(text, again, "print -> parse -> print changed the text");
    (text, back)
}

/// [`round_trip`], and the parsed graph must equal `g` (for graphs without NaNs, built by [`G`]).
fn round_trip_eq(g: &Graph) -> String {
    let (text, back) = round_trip(g);
    assert_eq!(&back, g, "parsed graph differs from the original:\n{text}");
    text
}

/// The raw bits of a tensor (strings as their text), to compare NaNs exactly.
fn bits(t: &Tensor) -> Vec<u8> {
    match t.data() {
        Data::String(v) => v.join("\u{1}").into_bytes(),
        _ => t.to_le_bytes().unwrap_or_default(),
    }
}

/// Compares `actual` with the expected text in a raw string literal at `line` of this file; with
/// `UPDATE_EXPECT=1` the literal is rewritten instead.
fn expect_at(actual: &str, expected: &str, line: u32) {
    let expected = expected.strip_prefix('\n').unwrap_or(expected);
    if actual == expected {
        return;
    }
    if std::env::var("UPDATE_EXPECT").is_ok_and(|v| v == "1") {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/text/tests.rs");
        let src = std::fs::read_to_string(&path).expect("read tests.rs");
        let line_start: usize = src
            .split_inclusive('\n')
            .take(line as usize - 1)
            .map(str::len)
            .sum();
        let open = line_start
            + src[line_start..]
                .find("r#\"")
                .expect("a r#\" literal after expect!")
            + 3;
        let close = open + src[open..].find("\"#").expect("the literal's end");
        let updated = format!("{}\n{actual}{}", &src[..open], &src[close..]);
        std::fs::write(&path, updated).expect("write tests.rs");
        return;
    }
    panic!(
        "text differs from the expectation (run with UPDATE_EXPECT=1 to update it)\n--- expected\n{expected}\n--- actual\n{actual}"
    );
}

macro_rules! expect {
    ($actual:expr, $expected:literal) => {
        expect_at(&$actual, $expected, line!())
    };
}

#[test]
fn golden_small_graph() {
    let mut g = G::new("main");
    let x = g.input("x", "f32[batch,3,8,8]");
    let cond = g.input("cond", "bool[]");
    let w = g.constant(
        "w",
        Tensor::from_vec(
            vec![2, 3, 1, 1],
            vec![1.0f32, -0.5, 0.0, -0.0, f32::NAN, f32::NEG_INFINITY],
        )
        .unwrap(),
    );
    let sizes = g.constant("sizes", Tensor::vector(vec![1i64, 1]));
    let a = g.node(
        "conv1",
        op(
            "Conv",
            vec![
                ("strides", Attr::Ints(vec![2, 2])),
                ("pads", Attr::Ints(vec![0; 4])),
            ],
        ),
        &[Some(x), Some(w), None],
        &[("/conv1/Conv_output_0", "f32[batch,2,4,4]")],
    )[0];
    let split = g.node(
        "",
        op("Split", vec![("axis", Attr::Int(1))]),
        &[Some(a), Some(sizes)],
        &[("b", "f32[batch,1,4,4]"), ("c", "f32[batch,1,4,4]")],
    );
    let mut then_g = G::new("then_g");
    let tb = then_g.capture("b", "f32[batch,1,4,4]");
    then_g.output(tb);
    let mut else_g = G::new("else_g");
    let ec = else_g.capture("c", "f32[batch,1,4,4]");
    let e = else_g.node(
        "neg",
        op("Neg", vec![]),
        &[Some(ec)],
        &[("e", "f32[batch,1,4,4]")],
    )[0];
    else_g.output(e);
    let y = g.node(
        "if",
        op(
            "If",
            vec![
                ("then_branch", Attr::Graph(Arc::new(then_g.done()))),
                ("else_branch", Attr::Graph(Arc::new(else_g.done()))),
            ],
        ),
        &[Some(cond)],
        &[("y", "f32[batch,1,4,4]")],
    )[0];
    g.output(y);
    g.output(split[0]);
    let g = g.done();
    let (text, _) = round_trip(&g);
    expect!(
        text,
        r#"
graph main(%x: f32[batch,3,8,8], %cond: bool[]) -> (%y, %b) {
  const %w: f32[2,3,1,1] = [1.0, -0.5, 0.0, -0.0, nan, -inf]
  const %sizes: i64[2] = [1, 1]
  %"/conv1/Conv_output_0": f32[batch,2,4,4] = Conv[pads=[0, 0, 0, 0], strides=[2, 2]](%x, %w, _) @conv1
  %b: f32[batch,1,4,4], %c: f32[batch,1,4,4] = Split[axis=1](%"/conv1/Conv_output_0", %sizes)
  %y: f32[batch,1,4,4] = If[else_branch=graph else_g() -> (%e) {
    capture %c: f32[batch,1,4,4]
    %e: f32[batch,1,4,4] = Neg(%c) @neg
  }, then_branch=graph then_g() -> (%b) {
    capture %b: f32[batch,1,4,4]
  }](%cond) @if
}
"#
    );
    assert_eq!(g.to_string(), text);
}

#[test]
fn every_dtype_round_trips_bit_exactly() {
    let mut g = G::new("dtypes");
    let mut tensors = Vec::new();
    for d in DType::ALL {
        g.input(&format!("in_{d}"), &format!("{d}[2,n]"));
    }
    let f32s = [
        0.0f32,
        -0.0,
        1.0,
        -1.5,
        0.1,
        1e-7,
        1e20,
        f32::MAX,
        f32::MIN,
        f32::MIN_POSITIVE,
        f32::from_bits(1),
        f32::EPSILON,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        f32::from_bits(0x7fc0_0001),
        f32::from_bits(0xff80_0001),
        f32::from_bits(0x7f80_0001),
    ];
    let f64s = [
        0.0f64,
        -0.0,
        0.1,
        1.0 / 3.0,
        f64::MAX,
        f64::from_bits(1),
        f64::INFINITY,
        -f64::INFINITY,
        f64::NAN,
        -f64::NAN,
        f64::from_bits(0x7ff0_0000_0000_0001),
        f64::from_bits(0xfff8_dead_beef_0000),
    ];
    for d in DType::ALL {
        let t = match d {
            DType::F32 => Tensor::vector(f32s.to_vec()),
            DType::F64 => Tensor::vector(f64s.to_vec()),
            // Every bit pattern of the 16-bit floats.
            DType::F16 => Tensor::vector((0..=u16::MAX).map(f16::from_bits).collect()),
            DType::BF16 => Tensor::vector((0..=u16::MAX).map(bf16::from_bits).collect()),
            DType::C64 => {
                let v: Vec<f32> = f32s.iter().chain(&f32s[..1]).copied().collect();
                Tensor::from_data(d, vec![v.len() / 2], Data::C64(v)).unwrap()
            }
            DType::C128 => {
                Tensor::from_data(d, vec![f64s.len() / 2], Data::C128(f64s.to_vec())).unwrap()
            }
            DType::Bool => Tensor::vector(vec![true, false]),
            DType::U8 => Tensor::vector(vec![0u8, 255]),
            DType::I8 => Tensor::vector(vec![i8::MIN, -1, i8::MAX]),
            DType::U16 => Tensor::vector(vec![0u16, u16::MAX]),
            DType::I16 => Tensor::vector(vec![i16::MIN, i16::MAX]),
            DType::U32 => Tensor::vector(vec![0u32, u32::MAX]),
            DType::I32 => Tensor::vector(vec![i32::MIN, i32::MAX]),
            DType::U64 => Tensor::vector(vec![0u64, u64::MAX]),
            DType::I64 => Tensor::vector(vec![i64::MIN, 0, i64::MAX]),
            DType::String => Tensor::vector(
                [
                    "",
                    "plain",
                    "a \"quoted\" \\ back",
                    "tab\tnew\nline\r",
                    "\0nul",
                    "é名字🦀",
                    "\u{200b}\u{7f}\u{1b}",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ),
            // Every byte for the narrow formats.
            _ => Tensor::from_data(d, vec![256], Data::Bits((0..=255).collect())).unwrap(),
        };
        // A scalar and a rank-2 view too, so shapes [] and [2, k] appear.
        tensors.push((format!("c_{d}"), t.clone()));
        if t.len() % 2 == 0 {
            let n = t.len();
            tensors.push((format!("m_{d}"), t.clone().reshape(vec![2, n / 2]).unwrap()));
        }
    }
    tensors.push(("scalar".into(), Tensor::scalar(-0.0f32)));
    tensors.push((
        "empty".into(),
        Tensor::from_vec(vec![0, 3], Vec::<i64>::new()).unwrap(),
    ));
    for (name, t) in &tensors {
        g.constant(name, t.clone());
    }
    let g = g.done();
    let (text, back) = round_trip(&g);
    for (name, t) in &tensors {
        let id = back.value_by_name(name).unwrap();
        let got = back.value(id).constant.as_ref().unwrap();
        assert_eq!(got.dtype(), t.dtype(), "{name}");
        assert_eq!(got.shape(), t.shape(), "{name}");
        assert_eq!(bits(got), bits(t), "{name}");
    }
    for d in DType::ALL {
        let id = back.value_by_name(&format!("in_{d}")).unwrap();
        assert_eq!(back.value(id).ty, ty(&format!("{d}[2,n]")));
    }
    assert!(text.contains("const %c_f32: f32[19] = [0.0, -0.0, 1.0, -1.5, 0.1, 1e-7, 1e20, "));
    assert!(
        text.contains("inf, -inf, nan, -nan, nan(0x7fc00001), nan(0xff800001), nan(0x7f800001)]")
    );
    assert!(text.contains("const %c_c64: c64[10] = [(0.0, -0.0), (1.0, -1.5), "));
    assert!(text.contains(r#"["", "plain", "a \"quoted\" \\ back", "tab\tnew\nline\r", "\0nul", "é名字🦀", "\u{200b}\u{7f}\u{1b}"]"#));
    assert!(text.contains("const %c_f8e4m3fn: f8e4m3fn[256] = [0x00, 0x01, "));
    assert!(text.contains("const %c_i4: i4[256] = [0, 1, 2, "));
}

#[test]
fn random_float_bits_round_trip() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let f32s: Vec<f32> = (0..20_000)
        .map(|_| f32::from_bits(rng.next() as u32))
        .collect();
    let f64s: Vec<f64> = (0..20_000).map(|_| f64::from_bits(rng.next())).collect();
    let mut g = G::new("random");
    g.constant("a", Tensor::vector(f32s));
    g.constant("b", Tensor::vector(f64s));
    let g = g.done();
    let (_, back) = round_trip(&g);
    for (a, b) in g.values.iter().zip(&back.values) {
        assert_eq!(
            bits(a.constant.as_ref().unwrap()),
            bits(b.constant.as_ref().unwrap())
        );
    }
}

#[test]
fn every_attribute_kind_round_trips() {
    let tensor = Arc::new(Tensor::from_vec(vec![2], vec![1.5f32, f32::NAN]).unwrap());
    let graph = Arc::new(G::new("body").done());
    let cases: Vec<(Attr, &str)> = vec![
        (Attr::Int(-3), "-3"),
        (Attr::Int(i64::MIN), "-9223372036854775808"),
        (Attr::Float(1.0), "1.0"),
        (Attr::Float(1e-5), "1e-5"),
        (Attr::Float(-0.0), "-0.0"),
        (Attr::Float(f32::from_bits(0x7fc0_0001)), "nan(0x7fc00001)"),
        (Attr::String("NOTSET".into()), r#""NOTSET""#),
        (Attr::String("a\"b\n".into()), r#""a\"b\n""#),
        (Attr::Ints(vec![1, -2]), "[1, -2]"),
        (Attr::Ints(vec![]), "ints[]"),
        (Attr::Floats(vec![2.0, -inf_f32()]), "[2.0, -inf]"),
        (Attr::Floats(vec![f32::NAN, 1.0]), "[nan, 1.0]"),
        (Attr::Floats(vec![]), "floats[]"),
        (
            Attr::Strings(vec!["Tanh".into(), "".into()]),
            r#"["Tanh", ""]"#,
        ),
        (Attr::Strings(vec![]), "strings[]"),
        (Attr::Tensor(tensor.clone()), "tensor f32[2] [1.5, nan]"),
        (
            Attr::Tensor(Arc::new(Tensor::scalar(7i64))),
            "tensor i64[] [7]",
        ),
        (
            Attr::Tensors(vec![tensor.clone(), tensor.clone()]),
            "[tensor f32[2] [1.5, nan], tensor f32[2] [1.5, nan]]",
        ),
        (Attr::Tensors(vec![]), "tensors[]"),
        (Attr::Graph(graph.clone()), "graph body() -> () {\n}"),
        (
            Attr::Graphs(vec![graph.clone()]),
            "[graph body() -> () {\n}]",
        ),
        (Attr::Graphs(vec![]), "graphs[]"),
        (Attr::Type(ty("seq<opt<f32[*]>>")), "type seq<opt<f32[*]>>"),
        (
            Attr::Types(vec![ty("i64[]"), ty("string[\"a b\",2]")]),
            r#"[type i64[], type string["a b",2]]"#,
        ),
        (Attr::Types(vec![]), "types[]"),
    ];
    for (attr, text) in cases {
        assert_eq!(print_attr(&attr), text);
        let back = parse_attr(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(print_attr(&back), text);
        assert_eq!(back.kind(), attr.kind(), "{text}");
    }
    // Other spellings the parser accepts.
    for (text, printed) in [
        ("ints[1,2,]", "[1, 2]"),
        ("floats[1, 2]", "[1.0, 2.0]"),
        ("[inf, 2]", "[inf, 2.0]"),
        ("-nan", "-nan"),
        ("1E3", "1000.0"),
        ("0x10", "16"),
    ] {
        assert_eq!(print_attr(&parse_attr(text).unwrap()), printed, "{text}");
    }
}

fn inf_f32() -> f32 {
    f32::INFINITY
}

#[test]
fn op_attributes_round_trip_through_graphs() {
    let mut g = G::new("ops");
    let x = g.input("x", "f32[2,3]");
    let shape = g.input("shape", "i64[2]");
    let lstm_in = g.input("lstm_in", "f32[5,1,3]");
    type Case<'a> = (&'a str, Vec<(&'a str, Attr)>, Vec<Option<ValueId>>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "Celu",
            vec![("alpha", Attr::Float(0.5))],
            vec![Some(x)],
            "f32[2,3]",
        ),
        ("Celu", vec![], vec![Some(x)], "f32[2,3]"),
        (
            "Cast",
            vec![
                ("to", Attr::Int(7)),
                ("round_mode", Attr::String("down".into())),
            ],
            vec![Some(x)],
            "i64[2,3]",
        ),
        (
            "ConstantOfShape",
            vec![(
                "value",
                Attr::Tensor(Arc::new(Tensor::vector(vec![f16::from_f32(0.5)]))),
            )],
            vec![Some(shape)],
            "f16[2,3]",
        ),
        (
            "Optional",
            vec![("type", Attr::Type(ty("seq<f32[*]>")))],
            vec![],
            "opt<seq<f32[*]>>",
        ),
        (
            "LSTM",
            vec![
                (
                    "activations",
                    Attr::Strings(vec!["Sigmoid".into(), "Tanh".into(), "Tanh".into()]),
                ),
                ("activation_alpha", Attr::Floats(vec![0.1, 0.2])),
                ("hidden_size", Attr::Int(4)),
                ("direction", Attr::String("reverse".into())),
            ],
            vec![Some(lstm_in), None, None, None, None, None, None, None],
            "f32[5,1,1,4]",
        ),
        (
            "TfIdfVectorizer",
            vec![
                ("max_gram_length", Attr::Int(2)),
                ("max_skip_count", Attr::Int(0)),
                ("min_gram_length", Attr::Int(1)),
                ("mode", Attr::String("TF".into())),
                ("ngram_counts", Attr::Ints(vec![])),
                ("ngram_indexes", Attr::Ints(vec![0, 1])),
                (
                    "pool_strings",
                    Attr::Strings(vec!["a".into(), "b c".into()]),
                ),
                ("weights", Attr::Floats(vec![])),
            ],
            vec![Some(x)],
            "f32[*]",
        ),
    ];
    for (i, (name, attrs, inputs, out)) in cases.into_iter().enumerate() {
        let o = g.node(
            &format!("n{i}"),
            op(name, attrs),
            &inputs,
            &[(&format!("out{i}"), out)],
        )[0];
        g.output(o);
    }
    let text = round_trip_eq(&g.done());
    assert!(text.contains("Celu[alpha=0.5](%x) @n0\n"), "{text}");
    assert!(text.contains("= Celu(%x) @n1\n"), "{text}");
    assert!(text.contains("LSTM[activation_alpha=[0.1, 0.2], activations=[\"Sigmoid\", \"Tanh\", \"Tanh\"], direction=\"reverse\", hidden_size=4](%lstm_in, _, _, _, _, _, _, _)"), "{text}");
    assert!(
        text.contains("%out4: opt<seq<f32[*]>> = Optional[type=type seq<f32[*]>]() @n4"),
        "{text}"
    );
    assert!(
        text.contains("ngram_counts=ints[], ngram_indexes=[0, 1]"),
        "{text}"
    );
}

/// A loop body capturing `outer` (two levels up, through the loop) inside an If inside a Loop, plus a Scan and a
/// SequenceMap, multi-output nodes and absent inputs.
#[test]
fn nested_subgraphs_with_captures_round_trip() {
    let mut g = G::new("nested");
    let n = g.input("n", "i64[]");
    let cond = g.input("cond", "bool[]");
    let outer = g.input("outer", "f32[4]");
    let seq = g.input("seq", "seq<f32[*]>");
    let init = g.constant("init", Tensor::vector(vec![0.0f32; 4]));

    let mut then_g = G::new("then");
    let c = then_g.capture("outer", "f32[4]");
    let v = then_g.capture("v", "f32[4]");
    let s = then_g.node(
        "add",
        op("Add", vec![]),
        &[Some(c), Some(v)],
        &[("s", "f32[4]")],
    )[0];
    then_g.output(s);
    let mut else_g = G::new("else");
    let v2 = else_g.capture("v", "f32[4]");
    else_g.output(v2);

    let mut body = G::new("body");
    let _i = body.input("i", "i64[]");
    let bc = body.input("c", "bool[]");
    let v = body.input("v", "f32[4]");
    body.capture("outer", "f32[4]");
    let nv = body.node(
        "inner_if",
        op(
            "If",
            vec![
                ("then_branch", Attr::Graph(Arc::new(then_g.done()))),
                ("else_branch", Attr::Graph(Arc::new(else_g.done()))),
            ],
        ),
        &[Some(bc)],
        &[("nv", "f32[4]")],
    )[0];
    let _ = v;
    body.output(bc);
    body.output(nv);
    body.output(nv);

    let lo = g.node(
        "loop",
        op("Loop", vec![("body", Attr::Graph(Arc::new(body.done())))]),
        &[Some(n), Some(cond), Some(init)],
        &[("final", "f32[4]"), ("scan_out", "f32[loop_iters,4]")],
    );

    let mut scan_body = G::new("scan body");
    let st = scan_body.input("state", "f32[4]");
    let xi = scan_body.input("x_i", "f32[]");
    let o = scan_body.node(
        "",
        op("Identity", vec![]),
        &[Some(st)],
        &[("st2", "f32[4]")],
    )[0];
    scan_body.output(o);
    scan_body.output(xi);
    let sc = g.node(
        "scan",
        op(
            "Scan",
            vec![
                ("body", Attr::Graph(Arc::new(scan_body.done()))),
                ("num_scan_inputs", Attr::Int(1)),
                ("scan_input_axes", Attr::Ints(vec![0])),
            ],
        ),
        &[Some(lo[0]), Some(outer)],
        &[("scan_state", "f32[4]"), ("scan_ys", "f32[4]")],
    );

    let mut map_body = G::new("map_body");
    let e = map_body.input("e", "f32[*]");
    let r = map_body.node("relu", op("Relu", vec![]), &[Some(e)], &[("r", "f32[*]")])[0];
    map_body.output(r);
    let mapped = g.node(
        "map",
        op(
            "SequenceMap",
            vec![("body", Attr::Graph(Arc::new(map_body.done())))],
        ),
        &[Some(seq)],
        &[("mapped", "seq<f32[*]>")],
    )[0];
    g.output(lo[1]);
    g.output(sc[0]);
    g.output(sc[1]);
    g.output(mapped);
    let g = g.done();
    let text = round_trip_eq(&g);
    assert!(
        text.contains("    }, then_branch=graph then() -> (%s) {\n      capture %outer: f32[4]\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "Scan[body=graph \"scan body\"(%state: f32[4], %x_i: f32[]) -> (%st2, %x_i) {"
        ),
        "{text}"
    );
}

#[test]
fn weird_names_round_trip() {
    let names = [
        "/conv1/Conv_output_0",
        "onnx::Conv_123",
        "123",
        "a b",
        "quote\"and\\slash",
        "",
        "名字",
        "_",
        "...",
        "line\nbreak",
    ];
    let mut g = G::new("weird graph/name:0");
    let mut prev = g.input("x", "f32[\"batch size\",\"1x\",_]");
    for (i, name) in names.iter().enumerate() {
        prev = g.node(
            &format!("node {name}"),
            op("Relu", vec![]),
            &[Some(prev)],
            &[(name, "f32[\"batch size\",\"1x\",_]")],
        )[0];
        if i == 0 {
            g.output(prev);
        }
    }
    g.output(prev);
    let text = round_trip_eq(&g.done());
    assert!(text.starts_with("graph \"weird graph/name:0\"(%x: f32[\"batch size\",\"1x\",_]) -> (%\"/conv1/Conv_output_0\", %\"line\\nbreak\") {\n"), "{text}");
    assert!(text.contains("%123: "), "{text}");
    assert!(text.contains("%\"\": "), "{text}");
    assert!(text.contains(" @\"node \"\n"), "{text}");
}

#[test]
fn zero_output_nodes_and_unusual_graphs_round_trip() {
    // A node without outputs, a graph output that is an input, a repeated output, an empty graph.
    let mut g = G::new("");
    let x = g.input("x", "f32[1]");
    g.node("sink", op("Identity", vec![]), &[Some(x)], &[]);
    g.output(x);
    g.output(x);
    let text = round_trip_eq(&g.done());
    expect!(
        text,
        r#"
graph ""(%x: f32[1]) -> (%x, %x) {
  Identity(%x) @sink
}
"#
    );
    round_trip_eq(&G::new("empty").done());
    // A constant whose declared type is not exactly its tensor's uses the explicit form.
    let mut g = G::new("g");
    let c = g.constant("c", Tensor::vector(vec![1i64, 2]));
    g.0.values[c.index()].ty = ty("i64[n]");
    g.output(c);
    let text = round_trip_eq(&g.done());
    assert!(
        text.contains("const %c: i64[n] = tensor i64[2] [1, 2]\n"),
        "{text}"
    );
}

#[test]
fn comments_and_whitespace_are_ignored() {
    let text = "# a comment\ngraph   g ( %x :f32[ 2 ] ,)->(%y,){ # trailing\n\n %y:f32[2]=Relu(%x,)@r\n}  # end";
    let g = parse(text).unwrap();
    expect!(
        print(&g),
        r#"
graph g(%x: f32[2]) -> (%y) {
  %y: f32[2] = Relu(%x) @r
}
"#
    );
}

#[test]
fn elided_constants_are_readable_but_do_not_parse() {
    let mut g = G::new("big");
    g.constant("w", Tensor::vector((0..100).map(|i| i as f32).collect()));
    g.constant("small", Tensor::vector(vec![1u8, 2]));
    let g = g.done();
    let text = print_with(
        &g,
        PrintOptions {
            max_const_elems: Some(3),
        },
    );
    expect!(
        text,
        r#"
graph big() -> () {
  const %w: f32[100] = [0.0, 1.0, 2.0, ... 100 elements]
  const %small: u8[2] = [1, 2]
}
"#
    );
    let err = parse(&text).unwrap_err();
    assert_eq!(
        err.to_string(),
        "2:40: this data was elided when it was printed (`...`); it cannot be parsed back"
    );
    let text = print_with(
        &g,
        PrintOptions {
            max_const_elems: Some(0),
        },
    );
    assert!(text.contains("= [... 100 elements]"), "{text}");
}

#[test]
fn parse_errors_name_line_and_column() {
    let cases = [
        ("", "1:1: expected `graph`, found the end of the text"),
        (
            "graph g() -> () {",
            "1:18: expected a statement (`capture`, `const`, a node) or `}`, found the end of the text",
        ),
        (
            "graph g() -> () {}\nx",
            "2:1: expected the end of the text, found `x`",
        ),
        (
            "graph g(%x: f32[2]) -> (%y) {\n}",
            "1:25: value `%y` is not defined (a subgraph reads outer values through `capture`)",
        ),
        (
            "graph g(%x: f32[2]) -> () {\n  %y: f32[2] = Relu(%z)\n}",
            "2:21: value `%z` is not defined (a subgraph reads outer values through `capture`)",
        ),
        (
            "graph g(%x: f32[2], %x: f32[2]) -> () {}",
            "1:21: value `%x` is already defined",
        ),
        ("graph g(%x: f33[2]) -> () {}", "1:13: unknown type `f33`"),
        ("graph g(%x: f32[-1]) -> () {}", "1:17: invalid dim `-1`"),
        (
            "graph g(%x: f32) -> () {}",
            "1:16: expected `[` after the dtype (`f32[]` is a scalar, `f32[*]` has unknown rank), found `)`",
        ),
        (
            "graph g(%x: f32[2]) -> () {\n  %y: f32[2] = Frob(%x)\n}",
            "2:16: unknown op `Frob`",
        ),
        (
            "graph g(%x: f32[2]) -> () {\n  %y: f32[2] = Cast(%x)\n}",
            "2:16: op `Cast`: required attribute `to` is missing",
        ),
        (
            "graph g(%x: f32[2]) -> () {\n  %y: f32[2] = Relu[alpha=1.0](%x)\n}",
            "2:16: op `Relu`: unknown attribute `alpha`",
        ),
        (
            "graph g(%x: f32[2]) -> () {\n  %y: f32[2] = Cast[to=1, to=2](%x)\n}",
            "2:27: attribute `to` is given twice",
        ),
        (
            "graph g(%x: f32[2]) -> () {\n  %y: f32[2] = Cast[to=1.5](%x)\n}",
            "2:16: op `Cast`: attribute `to` should be int, got float",
        ),
        (
            "graph g(%x: f32[2]) -> () {\n  %y: f32[2] = Conv[pads=[]](%x)\n}",
            "2:26: an empty list must name its kind: `ints[]`, `floats[]`, `strings[]`, `tensors[]`, `graphs[]` or `types[]`",
        ),
        (
            "graph g() -> () {\n  const %c: f32[3] = [1.0, 2.0]\n}",
            "2:22: shape [3] needs 3 elements but 2 were given",
        ),
        (
            "graph g() -> () {\n  const %c: f32[2] = [1.0, x]\n}",
            "2:28: expected a float, found `x`",
        ),
        (
            "graph g() -> () {\n  const %c: u8[1] = [256]\n}",
            "2:22: `256` is not an integer in range for u8",
        ),
        (
            "graph g() -> () {\n  const %c: f32[1] = [nan(0x3f800000)]\n}",
            "2:23: 0x3f800000 is not the bit pattern of a 32-bit NaN",
        ),
        (
            "graph g() -> () {\n  const %c: f32[n] = [1.0]\n}",
            "2:22: a constant whose type has unknown dims needs `tensor TYPE [...]` data",
        ),
        (
            "graph g() -> () {\n  const %c: string[1] = [\"abc]\n}",
            "2:26: unterminated string",
        ),
        (
            "graph g() -> () {\n  const %c: string[1] = [\"a\\qc\"]\n}",
            "2:28: unknown escape `\\q`",
        ),
        (
            "graph g() -> () {\n  const %c: string[1] = [\"\\u{110000}\"]\n}",
            "2:27: invalid `\\u{...}` escape: expected 1 to 6 hex digits naming a char",
        ),
        ("graph g() -> () {\n  $\n}", "2:3: unexpected character '$'"),
        (
            "graph g() -> () {\n  % \n}",
            "2:3: expected a name after `%`",
        ),
        (
            "graph g(%x: f32[2]) -> () {\n  %x: f32[2] = Relu(%x)\n}",
            "2:3: value `%x` is already defined",
        ),
        (
            "graph g(%c: bool[]) -> () {\n  %y: f32[2] = If[then_branch=graph t() -> () {}, else_branch=graph e() -> (%q) {}](%c)\n}",
            "2:77: value `%q` is not defined (a subgraph reads outer values through `capture`)",
        ),
        (
            "graph g() -> () {\n  const %c: f32[1] = ... 1 elements\n}",
            "2:22: expected `[` to open the data, found `...`",
        ),
        (
            "graph g() -> () {\n  const %c: string[1] = [\"名字\" x]\n}",
            "2:31: expected `,` or `]` in the list, found `x`",
        ),
    ];
    for (text, want) in cases {
        let got = parse(text).map(|g| print(&g)).unwrap_err().to_string();
        assert_eq!(got, want, "for text:\n{text}");
    }
    // Verification failures point at the graph.
    let err = parse("graph g(%x: f32[2]) -> () {\n  %x2: f32[2] = Identity(%x)\n}").map(|_| ());
    assert!(err.is_ok());
    // Too deep nesting is an error, not a stack overflow.
    let deep = format!(
        "graph g(%x: {}f32[2]{}) -> () {{}}",
        "seq<".repeat(100),
        ">".repeat(100)
    );
    assert_eq!(
        parse(&deep).unwrap_err().to_string(),
        "1:1: nested more than 64 levels deep".replace("1:1", &format!("1:{}", 13 + 4 * 63))
    );
}

/// A small deterministic random number generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// The parser never panics: random bytes, every truncation of a valid text, and random edits of it.
#[test]
fn parser_never_panics() {
    let mut g = G::new("f");
    let x = g.input("x", "f32[2]");
    let c = g.input("c", "bool[]");
    g.constant("k", Tensor::vector(vec![f32::NAN, -0.0]));
    g.constant("s", Tensor::vector(vec!["a\"\\ \u{1F980}".to_string()]));
    g.constant(
        "cz",
        Tensor::from_data(DType::C128, vec![1], Data::C128(vec![1.0, f64::NAN])).unwrap(),
    );
    let mut t = G::new("t");
    let cx = t.capture("x", "f32[2]");
    t.output(cx);
    let y = g.node(
        "if \"1\"",
        op(
            "If",
            vec![
                ("then_branch", Attr::Graph(Arc::new(t.0.clone()))),
                ("else_branch", Attr::Graph(Arc::new(t.0))),
            ],
        ),
        &[Some(c)],
        &[("y", "f32[2]")],
    )[0];
    let z = g.node(
        "",
        op("Conv", vec![("pads", Attr::Ints(vec![1]))]),
        &[Some(y), None, Some(x)],
        &[("z", "f32[*]")],
    )[0];
    g.output(z);
    let text = print(&g.done());
    parse(&text).unwrap();

    for end in (0..text.len()).filter(|&i| text.is_char_boundary(i)) {
        let _ = parse(&text[..end]);
    }
    let mut rng = Rng(42);
    let alphabet: Vec<char> = "graph const capture %@\"\\(){}[]<>,:=*_-+.#0123456789xabefnu\n名"
        .chars()
        .collect();
    for _ in 0..3000 {
        let mut chars: Vec<char> = text.chars().collect();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(chars.len());
            match rng.below(3) {
                0 => {
                    chars.remove(at);
                }
                1 => chars.insert(at, alphabet[rng.below(alphabet.len())]),
                _ => chars[at] = alphabet[rng.below(alphabet.len())],
            }
        }
        let mutated: String = chars.into_iter().collect();
        if let Ok(g) = parse(&mutated) {
            // Whatever parses must print and parse again.
            let (_, _) = round_trip(&g);
        }
    }
    for _ in 0..2000 {
        let bytes: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
        let _ = parse(&String::from_utf8_lossy(&bytes));
        let tokens: String = (0..rng.below(40))
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        let _ = parse(&tokens);
    }
}

/// Print and parse are linear and fast enough for real weights: 10 M floats in a release build take a few seconds
/// (measured once: see the module docs of [`crate::text`]); debug builds check a smaller tensor.
#[test]
fn large_constants_print_and_parse_quickly() {
    let n = if cfg!(debug_assertions) {
        300_000
    } else {
        10_000_000
    };
    let mut rng = Rng(7);
    let v: Vec<f32> = (0..n)
        .map(|_| (rng.next() % 2_000_000) as f32 * 1e-3 - 1000.0)
        .collect();
    let mut g = G::new("big");
    g.constant("w", Tensor::vector(v));
    let g = g.done();
    let start = std::time::Instant::now();
    let text = print(&g);
    let printed = start.elapsed();
    let back = parse(&text).unwrap();
    let parsed = start.elapsed() - printed;
    eprintln!(
        "{n} f32: {} bytes, print {printed:?}, parse {parsed:?}",
        text.len()
    );
    assert_eq!(
        bits(back.values[0].constant.as_ref().unwrap()),
        bits(g.values[0].constant.as_ref().unwrap())
    );
    assert!(
        printed.as_secs() < 30 && parsed.as_secs() < 30,
        "print {printed:?}, parse {parsed:?}"
    );
}

/// Deeply nested subgraphs parse up to the nesting limit and are an error (not a stack overflow) beyond it.
#[test]
fn nesting_is_limited() {
    fn nested(levels: usize) -> String {
        let mut inner = "graph leaf() -> () {\n}".to_string();
        for d in 0..levels {
            inner = format!(
                "graph g{d}() -> () {{\ncapture %c: bool[]\nIf[else_branch=graph e() -> () {{}}, then_branch={inner}](%c)\n}}"
            );
        }
        format!(
            "graph top(%c: bool[]) -> () {{\nIf[else_branch=graph e() -> () {{}}, then_branch={inner}](%c)\n}}"
        )
    }
    let g = parse(&nested(62)).unwrap();
    round_trip_eq(&g);
    let err = parse(&nested(70)).unwrap_err();
    assert_eq!(err.message, "nested more than 64 levels deep");
}

/// A graph whose value table is in another order than the parser's (constants after node outputs, as
/// `GraphBuilder` makes them) prints the same after a round trip, and the parsed graph has the same structure.
#[test]
fn builder_graphs_round_trip() {
    let mut b = crate::GraphBuilder::new("built");
    let x = b.input(
        "x",
        crate::TensorType::new(DType::F32, ["batch".into(), 4.into()]),
    );
    let one = b.constant("one", Tensor::vector(vec![1.0f32; 4]));
    let s = b.node1(op("Add", vec![]), &[x, one]).unwrap();
    let two = b.constant("two", Tensor::vector(vec![2.0f32; 4]));
    let m = b.node1(op("Add", vec![]), &[s, two]).unwrap();
    let r = b.node1(op("Relu", vec![]), &[m]).unwrap();
    b.output(r);
    let g = b.finish().unwrap();
    let (text, back) = round_trip(&g);
    expect!(
        text,
        r#"
graph built(%x: f32[batch,4]) -> (%relu_2_0) {
  const %one: f32[4] = [1.0, 1.0, 1.0, 1.0]
  const %two: f32[4] = [2.0, 2.0, 2.0, 2.0]
  %add_0_0: f32[batch,4] = Add(%x, %one) @add_0
  %add_1_0: f32[batch,4] = Add(%add_0_0, %two) @add_1
  %relu_2_0: f32[batch,4] = Relu(%add_1_0) @relu_2
}
"#
    );
    assert_eq!(check_round_trip(&g), Ok(()));
    assert_eq!(back.values.len(), g.values.len());
    assert_eq!(back.value(back.outputs[0]).name, "relu_2_0");
}

#[test]
fn check_round_trip_reports_the_offending_line() {
    let mut g = Graph::new("bad");
    let x = g.add_value("x", ty("f32[1]"));
    g.inputs.push(x);
    let y = g.add_value("x", ty("f32[1]"));
    g.nodes.push(Node {
        name: String::new(),
        op: op("Relu", vec![]),
        inputs: vec![Some(x)],
        outputs: vec![y],
    });
    assert_eq!(
        check_round_trip(&g),
        Err("the printed text does not parse: 2:3: value `%x` is already defined\n  %x: f32[1] = Relu(%x)".into())
    );
}
