//! The printer: [`Graph`] to text, in time linear in the size of the graph and its data.

use std::fmt::Write;

use half::{bf16, f16};

use super::{PrintOptions, is_plain_ident, is_plain_name};
use crate::tensor::Data;
use crate::types::Dim;
use crate::{Attr, DType, Graph, Tensor, TensorType, ValueId, ValueType};

/// Writes formatted text to a `String`; writing to a `String` cannot fail.
macro_rules! w {
    ($out:expr, $($arg:tt)*) => {{
        let _ = write!($out, $($arg)*);
    }};
}

/// The graph's full text form; [`super::parse`] reads it back to the same graph.
pub fn print(graph: &Graph) -> String {
    print_with(graph, PrintOptions::default())
}

/// The graph's text form with `options` (e.g. large constants elided for humans).
pub fn print_with(graph: &Graph, options: PrintOptions) -> String {
    // Constants dominate the size of real models' text: reserve for them up front rather than regrow a string of
    // a gigabyte or more several times.
    let mut estimate = 0usize;
    for v in &graph.values {
        if let Some(t) = &v.constant {
            let shown = options.max_const_elems.map_or(t.len(), |m| m.min(t.len()));
            estimate = estimate.saturating_add(shown.saturating_mul(approx_elem_len(t.dtype())));
        }
    }
    let mut p = Printer {
        out: String::with_capacity(estimate.saturating_add(4096)),
        options,
    };
    p.graph(graph, 0);
    p.out.push('\n');
    p.out
}

struct Printer {
    out: String,
    options: PrintOptions,
}

impl Printer {
    fn indent(&mut self, level: usize) {
        for _ in 0..level {
            self.out.push_str("  ");
        }
    }

    /// Prints `graph` starting at the current position; its statements are indented one level deeper than
    /// `level` and its closing brace at `level`.
    fn graph(&mut self, g: &Graph, level: usize) {
        self.out.push_str("graph ");
        write_ident(&mut self.out, &g.name);
        self.out.push('(');
        for (i, &id) in g.inputs.iter().enumerate() {
            if i > 0 {
                self.out.push_str(", ");
            }
            self.typed_value(g, id);
        }
        self.out.push_str(") -> (");
        for (i, &id) in g.outputs.iter().enumerate() {
            if i > 0 {
                self.out.push_str(", ");
            }
            self.value_ref(g, id);
        }
        self.out.push_str(") {\n");
        for &id in &g.captures {
            self.indent(level + 1);
            self.out.push_str("capture ");
            self.typed_value(g, id);
            self.out.push('\n');
        }
        for (i, v) in g.values.iter().enumerate() {
            let Some(t) = &v.constant else { continue };
            self.indent(level + 1);
            self.out.push_str("const ");
            self.typed_value(g, ValueId(i as u32));
            self.out.push_str(" = ");
            let exact = ValueType::Tensor(TensorType::known(t.dtype(), t.shape()));
            if v.ty == exact {
                self.data(t);
            } else {
                self.tensor(t);
            }
            self.out.push('\n');
        }
        for node in &g.nodes {
            self.indent(level + 1);
            for (i, &id) in node.outputs.iter().enumerate() {
                if i > 0 {
                    self.out.push_str(", ");
                }
                self.typed_value(g, id);
            }
            if !node.outputs.is_empty() {
                self.out.push_str(" = ");
            }
            self.out.push_str(node.op.name());
            let attrs = node.op.attrs();
            if !attrs.is_empty() {
                self.out.push('[');
                for (i, (name, attr)) in attrs.iter().enumerate() {
                    if i > 0 {
                        self.out.push_str(", ");
                    }
                    write_ident(&mut self.out, name);
                    self.out.push('=');
                    self.attr(attr, level + 1);
                }
                self.out.push(']');
            }
            self.out.push('(');
            for (i, input) in node.inputs.iter().enumerate() {
                if i > 0 {
                    self.out.push_str(", ");
                }
                match input {
                    Some(id) => self.value_ref(g, *id),
                    None => self.out.push('_'),
                }
            }
            self.out.push(')');
            if !node.name.is_empty() {
                self.out.push_str(" @");
                write_name(&mut self.out, &node.name);
            }
            self.out.push('\n');
        }
        self.indent(level);
        self.out.push('}');
    }

    /// `%name`, or a placeholder for an id out of range (the printer accepts graphs that do not verify).
    fn value_ref(&mut self, g: &Graph, id: ValueId) {
        self.out.push('%');
        match g.values.get(id.index()) {
            Some(v) => write_name(&mut self.out, &v.name),
            None => write_name(&mut self.out, &format!("<no value {}>", id.0)),
        }
    }

    /// `%name: TYPE`.
    fn typed_value(&mut self, g: &Graph, id: ValueId) {
        self.value_ref(g, id);
        if let Some(v) = g.values.get(id.index()) {
            self.out.push_str(": ");
            write_type(&mut self.out, &v.ty);
        }
    }

    /// An attribute value; graphs are printed as statements at `level`.
    fn attr(&mut self, attr: &Attr, level: usize) {
        fn list<T>(
            p: &mut Printer,
            kind: &str,
            items: &[T],
            mut item: impl FnMut(&mut Printer, &T),
        ) {
            if items.is_empty() {
                p.out.push_str(kind);
            }
            p.out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    p.out.push_str(", ");
                }
                item(p, x);
            }
            p.out.push(']');
        }
        match attr {
            Attr::Int(i) => w!(self.out, "{i}"),
            Attr::Float(x) => write_f32(&mut self.out, *x),
            Attr::String(s) => write_str(&mut self.out, s),
            Attr::Ints(v) => list(self, "ints", v, |p, i| w!(p.out, "{i}")),
            Attr::Floats(v) => list(self, "floats", v, |p, x| write_f32(&mut p.out, *x)),
            Attr::Strings(v) => list(self, "strings", v, |p, s| write_str(&mut p.out, s)),
            Attr::Tensor(t) => self.tensor(t),
            Attr::Tensors(v) => list(self, "tensors", v, |p, t| p.tensor(t)),
            Attr::Graph(g) => self.graph(g, level),
            Attr::Graphs(v) => list(self, "graphs", v, |p, g| p.graph(g, level)),
            Attr::Type(t) => {
                self.out.push_str("type ");
                write_type(&mut self.out, t);
            }
            Attr::Types(v) => list(self, "types", v, |p, t| {
                p.out.push_str("type ");
                write_type(&mut p.out, t);
            }),
        }
    }

    /// `tensor TYPE [DATA]`: a tensor with its own dtype and shape.
    fn tensor(&mut self, t: &Tensor) {
        self.out.push_str("tensor ");
        write_type(
            &mut self.out,
            &ValueType::Tensor(TensorType::known(t.dtype(), t.shape())),
        );
        self.out.push(' ');
        self.data(t);
    }

    /// `[e0, e1, ...]`: the elements in row-major order, elided past `max_const_elems`.
    fn data(&mut self, t: &Tensor) {
        let n = t.len();
        let shown = match self.options.max_const_elems {
            Some(m) if n > m => m,
            _ => n,
        };
        let out = &mut self.out;
        out.push('[');
        match t.data() {
            Data::Bool(v) => items(out, &v[..shown], |o, &b| {
                o.push_str(if b { "true" } else { "false" })
            }),
            Data::U8(v) => items(out, &v[..shown], |o, x| w!(o, "{x}")),
            Data::I8(v) => items(out, &v[..shown], |o, x| w!(o, "{x}")),
            Data::U16(v) => items(out, &v[..shown], |o, x| w!(o, "{x}")),
            Data::I16(v) => items(out, &v[..shown], |o, x| w!(o, "{x}")),
            Data::U32(v) => items(out, &v[..shown], |o, x| w!(o, "{x}")),
            Data::I32(v) => items(out, &v[..shown], |o, x| w!(o, "{x}")),
            Data::U64(v) => items(out, &v[..shown], |o, x| w!(o, "{x}")),
            Data::I64(v) => items(out, &v[..shown], |o, x| w!(o, "{x}")),
            Data::F16(v) => items(out, &v[..shown], |o, &x| write_f16(o, x)),
            Data::BF16(v) => items(out, &v[..shown], |o, &x| write_bf16(o, x)),
            Data::F32(v) => items(out, &v[..shown], |o, &x| write_f32(o, x)),
            Data::F64(v) => items(out, &v[..shown], |o, &x| write_f64(o, x)),
            Data::C64(v) => pairs(out, &v[..2 * shown], write_f32),
            Data::C128(v) => pairs(out, &v[..2 * shown], write_f64),
            Data::String(v) => items(out, &v[..shown], |o, s| write_str(o, s)),
            Data::Bits(v) => {
                if bits_in_hex(t.dtype()) {
                    items(out, &v[..shown], |o, x| w!(o, "{x:#04x}"))
                } else {
                    items(out, &v[..shown], |o, x| w!(o, "{x}"))
                }
            }
        }
        if shown < n {
            if shown > 0 {
                out.push_str(", ");
            }
            w!(out, "... {n} elements");
        }
        out.push(']');
    }
}

/// Writes `v`'s elements separated by `, `.
fn items<T>(out: &mut String, v: &[T], mut f: impl FnMut(&mut String, &T)) {
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        f(out, x);
    }
}

/// Writes complex numbers stored as interleaved (re, im) pairs as `(re, im), ...`.
fn pairs<T: Copy>(out: &mut String, v: &[T], mut f: impl FnMut(&mut String, T)) {
    for (i, pair) in v.chunks_exact(2).enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        if let [re, im] = *pair {
            out.push('(');
            f(out, re);
            out.push_str(", ");
            f(out, im);
            out.push(')');
        }
    }
}

/// About how many bytes one element takes in the text, separator included.
fn approx_elem_len(dtype: DType) -> usize {
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => 12,
        DType::F64 => 21,
        DType::C64 => 26,
        DType::C128 => 44,
        DType::String => 8,
        DType::I64 | DType::U64 => 6,
        _ => 4,
    }
}

/// Whether a narrow format's raw bits are printed in hex (the float formats) rather than decimal (the integers).
fn bits_in_hex(dtype: DType) -> bool {
    dtype.is_float()
}

/// A graph name or attribute name: plain if [`is_plain_ident`], quoted otherwise.
fn write_ident(out: &mut String, s: &str) {
    if is_plain_ident(s) {
        out.push_str(s);
    } else {
        write_str(out, s);
    }
}

/// A value or node name after its sigil: plain if [`is_plain_name`], quoted otherwise.
fn write_name(out: &mut String, s: &str) {
    if is_plain_name(s) {
        out.push_str(s);
    } else {
        write_str(out, s);
    }
}

/// A quoted string with Rust escapes.
fn write_str(out: &mut String, s: &str) {
    w!(out, "{s:?}");
}

/// `f32[batch,3]`, `f32[*]`, `seq<...>`, `opt<...>`.
pub(super) fn write_type(out: &mut String, ty: &ValueType) {
    match ty {
        ValueType::Tensor(t) => {
            out.push_str(t.dtype.name());
            match &t.shape {
                None => out.push_str("[*]"),
                Some(dims) => {
                    out.push('[');
                    for (i, d) in dims.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        match d {
                            Dim::Known(n) => w!(out, "{n}"),
                            Dim::Sym(s) => write_ident(out, s),
                        }
                    }
                    out.push(']');
                }
            }
        }
        ValueType::Sequence(t) => {
            out.push_str("seq<");
            write_type(out, t);
            out.push('>');
        }
        ValueType::Optional(t) => {
            out.push_str("opt<");
            write_type(out, t);
            out.push('>');
        }
    }
}

/// Writes `nan`, `-nan`, `nan(0x...)`, `inf` or `-inf` for a special value and returns true; false for a finite
/// value. `bits` is the value's bit pattern, `width` its size in bits and `canonical` its quiet NaN.
fn write_special(
    out: &mut String,
    bits: u64,
    width: u32,
    canonical: u64,
    nan: bool,
    inf: bool,
) -> bool {
    let sign = 1u64 << (width - 1);
    if nan {
        if bits == canonical {
            out.push_str("nan");
        } else if bits == canonical | sign {
            out.push_str("-nan");
        } else {
            w!(out, "nan({bits:#0w$x})", w = width as usize / 4 + 2);
        }
        true
    } else if inf {
        out.push_str(if bits & sign != 0 { "-inf" } else { "inf" });
        true
    } else {
        false
    }
}

/// The bit width and canonical quiet NaN of each float format.
pub(super) const F16_NAN: u64 = 0x7e00;
pub(super) const BF16_NAN: u64 = 0x7fc0;
pub(super) const F32_NAN: u64 = 0x7fc0_0000;
pub(super) const F64_NAN: u64 = 0x7ff8_0000_0000_0000;

/// A float in the shortest form that reads back to the same bits.
pub(super) fn write_f32(out: &mut String, x: f32) {
    if !write_special(
        out,
        x.to_bits() as u64,
        32,
        F32_NAN,
        x.is_nan(),
        x.is_infinite(),
    ) {
        w!(out, "{x:?}");
    }
}

fn write_f64(out: &mut String, x: f64) {
    if !write_special(out, x.to_bits(), 64, F64_NAN, x.is_nan(), x.is_infinite()) {
        w!(out, "{x:?}");
    }
}

fn write_f16(out: &mut String, x: f16) {
    if !write_special(
        out,
        x.to_bits() as u64,
        16,
        F16_NAN,
        x.is_nan(),
        x.is_infinite(),
    ) {
        w!(out, "{:?}", x.to_f32());
    }
}

fn write_bf16(out: &mut String, x: bf16) {
    if !write_special(
        out,
        x.to_bits() as u64,
        16,
        BF16_NAN,
        x.is_nan(),
        x.is_infinite(),
    ) {
        w!(out, "{:?}", x.to_f32());
    }
}

/// One attribute value's text, for tests.
#[cfg(test)]
pub(super) fn print_attr(attr: &Attr) -> String {
    let mut p = Printer {
        out: String::new(),
        options: PrintOptions::default(),
    };
    p.attr(attr, 0);
    p.out
}
