//! The text form of the IR: a printer and a parser that round-trip.
//!
//! [`print()`] turns a [`Graph`] into text and [`parse`] turns that text back into the same graph, so that
//! print → parse → print is byte-identical. The form is meant to be read and grepped, like Cranelift's CLIF:
//!
//! ```text
//! graph main(%x: f32[batch,3,8,8], %cond: bool[]) -> (%y, %b) {
//!   const %w: f32[2,3,1,1] = [1.0, -0.5, 0.0, -0.0, nan, -inf]
//!   const %sizes: i64[2] = [1, 1]
//!   %"/conv1/Conv_output_0": f32[batch,2,4,4] = Conv[pads=[0, 0, 0, 0], strides=[2, 2]](%x, %w, _) @conv1
//!   %b: f32[batch,1,4,4], %c: f32[batch,1,4,4] = Split[axis=1](%"/conv1/Conv_output_0", %sizes)
//!   %y: f32[batch,1,4,4] = If[else_branch=graph else_g() -> (%e) {
//!     capture %c: f32[batch,1,4,4]
//!     %e: f32[batch,1,4,4] = Neg(%c) @neg
//!   }, then_branch=graph then_g() -> (%b) {
//!     capture %b: f32[batch,1,4,4]
//!   }](%cond) @if
//! }
//! ```
//!
//! - Statements: `capture %name: TYPE` (subgraphs only: a value of an enclosing graph, resolved by name),
//!   `const %name: TYPE = [DATA]` (the shape comes from the type; `const %name: TYPE = tensor TYPE2 [DATA]` when
//!   the value's type is not exactly its tensor's), and nodes
//!   `%out: TYPE, ... = Op[attr=value, ...](%in, _, ...) @node_name` (a node with no outputs starts with its op).
//!   Captures are printed first, then constants, then nodes in order; the graph's inputs are in its header and its
//!   outputs after `->`. `_` is an absent optional input; `# ...` is a comment.
//! - Names: `%name` for values and `@name` for nodes when the name is made of ASCII letters, digits, `_` and `.`;
//!   otherwise quoted like a Rust string (`%"/conv1/Conv_output_0"`). Graph names and dim symbols are plain when
//!   [`is_plain_ident`] says so, quoted otherwise.
//! - Types: `f32[batch,3,224,224]` (known sizes and symbols), `f32[]` (a scalar), `f32[*]` (unknown rank),
//!   `seq<TYPE>`, `opt<TYPE>`. Every value's type is printed where it is defined, so parsing needs no inference.
//! - Data: a flat list of elements. Floats are printed in the shortest form that reads back to the same bits
//!   (`1.0`, `-0.0`, `1e-5`, `inf`, `-inf`, `nan`, `-nan`, and `nan(0x7fc00001)` for any other NaN, as raw bits);
//!   f16 and bf16 are printed as the f32 of the same value; complex numbers as `(re, im)`; strings quoted with Rust
//!   escapes; bools as `true`/`false`; the narrow formats ([`crate::tensor::Data::Bits`]) as raw integers (hex for
//!   the float formats, `0x3c`).
//! - Attributes (only those that differ from the op's defaults, sorted by name): `3` (int), `1.0` (float: always
//!   with `.`, `e`, `inf` or `nan`), `"s"` (string), `[1, 2]`, `[1.0]`, `["a"]`, `tensor TYPE [DATA]`,
//!   `graph ...`, `type TYPE`, and lists of tensors, graphs and types. An empty list names its kind: `ints[]`,
//!   `floats[]`, `strings[]`, `tensors[]`, `graphs[]`, `types[]`.
//!
//! Values are referred to by name, never by [`crate::ValueId`]: the parser numbers them in the order the text
//! defines them (inputs, captures, constants, node outputs), so a graph built in that order parses back equal, and
//! any graph prints the same after a round trip. A value that nothing defines (not an input, capture, constant or
//! node output) is not printed.
//!
//! [`print_with`] can elide large constants for humans (`[1.0, 2.0, ... 143000000 elements]`); such text does
//! not parse back. [`parse`] never panics: every problem is a [`ParseError`] with a line and column, and the parsed
//! graph is checked with [`Graph::verify`].

use std::fmt;

use crate::Graph;

mod parse;
mod print;
#[cfg(test)]
mod tests;

pub use parse::parse;
pub use print::{print, print_with};

/// Whether `s` can be printed without quotes as a graph name or dim symbol.
pub fn is_plain_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// Whether `s` can be printed without quotes after a `%` or `@` sigil (a value or node name).
///
/// Unlike [`is_plain_ident`], a leading digit is fine here (`%0`, `%123`), since the sigil already says what
/// follows.
pub fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.')
}

/// Options for [`print_with`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrintOptions {
    /// Print at most this many elements of each constant and tensor attribute, followed by
    /// `... N elements`. Text with elided data does not parse back. `None` (the default) prints everything.
    pub max_const_elems: Option<usize>,
}

/// Why text could not be parsed into a graph: where (1-based line and column, in characters) and what.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{col}: {message}")]
pub struct ParseError {
    /// The line, counting from 1.
    pub line: usize,
    /// The column in characters, counting from 1.
    pub col: usize,
    /// What is wrong.
    pub message: String,
}

/// Checks that `graph` survives print → parse → print unchanged; for tests over whole models (every fixture model
/// must round-trip). The error names the first line that differs, or the parse error and the line it points at.
pub fn check_round_trip(graph: &Graph) -> Result<(), String> {
    let text = print(graph);
    let line_of = |text: &str, n: usize| -> String {
        let line = text.lines().nth(n.saturating_sub(1)).unwrap_or("");
        // Lines holding constants can be huge; show their start only.
        line.chars().take(200).collect()
    };
    let back = parse(&text).map_err(|e| {
        format!(
            "the printed text does not parse: {e}\n{}",
            line_of(&text, e.line)
        )
    })?;
    let again = print(&back);
    if again == text {
        return Ok(());
    }
    let n = text
        .lines()
        .zip(again.lines())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| text.lines().count().min(again.lines().count()))
        + 1;
    Err(format!(
        "print -> parse -> print differs at line {n}:\n- {}\n+ {}",
        line_of(&text, n),
        line_of(&again, n)
    ))
}

impl fmt::Display for Graph {
    /// The graph's text form (see [`print()`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&print(self))
    }
}

impl std::str::FromStr for Graph {
    type Err = ParseError;

    /// Parses the text form (see [`parse()`]).
    fn from_str(text: &str) -> Result<Graph, ParseError> {
        parse(text)
    }
}
