//! The parser: text to [`Graph`]. It reads tokens on demand (a model's text can hold hundreds of millions of
//! numbers), never panics, and reports every problem with its line and column.

use std::borrow::Cow;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use half::{bf16, f16};

use super::ParseError;
use super::print::{BF16_NAN, F16_NAN, F32_NAN, F64_NAN};
use crate::attr::{Attr, Attrs};
use crate::tensor::Data;
use crate::types::Dim;
use crate::{DType, Graph, Node, Op, Tensor, TensorType, ValueId, ValueInfo, ValueType};

/// How deeply graphs and types may nest; deeper text is an error rather than a stack overflow.
const MAX_DEPTH: usize = 64;

/// Parses the text form of a graph (see [`crate::text`]) and checks it with [`Graph::verify`].
pub fn parse(text: &str) -> Result<Graph, ParseError> {
    let mut p = Parser {
        lex: Lexer { src: text, pos: 0 },
        peeked: None,
        depth: 0,
    };
    let g = p.graph()?;
    let t = p.next()?;
    if t.tok != Tok::Eof {
        return Err(p.error(
            t.pos,
            format!("expected the end of the text, found {}", t.tok),
        ));
    }
    Ok(g)
}

/// A token.
#[derive(Clone, Debug, PartialEq)]
enum Tok<'a> {
    /// `graph`, `f32`, `Conv`, `_`, `nan`: a letter or `_`, then letters, digits, `_` and `.`.
    Ident(&'a str),
    /// `12`, `-0.5`, `1e-5`, `0x7f`, `-inf`: a digit, or a sign and a letter or digit, then the same as
    /// identifiers plus exponent signs.
    Num(&'a str),
    /// A quoted string, unescaped.
    Str(String),
    /// `%name` or `%"name"`.
    Value(Cow<'a, str>),
    /// `@name` or `@"name"`.
    At(Cow<'a, str>),
    /// One of `( ) [ ] { } < > , : = *`.
    Punct(char),
    /// `->`.
    Arrow,
    /// `...` (elided data).
    Ellipsis,
    /// The end of the text.
    Eof,
}

impl std::fmt::Display for Tok<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "`{s}`"),
            Tok::Num(s) => write!(f, "number `{s}`"),
            Tok::Str(s) => write!(f, "string {s:?}"),
            Tok::Value(s) => write!(f, "value `%{s}`"),
            Tok::At(s) => write!(f, "node name `@{s}`"),
            Tok::Punct(c) => write!(f, "`{c}`"),
            Tok::Arrow => write!(f, "`->`"),
            Tok::Ellipsis => write!(f, "`...`"),
            Tok::Eof => write!(f, "the end of the text"),
        }
    }
}

/// A token and the byte offset where it starts.
#[derive(Clone, Debug)]
struct Token<'a> {
    tok: Tok<'a>,
    pos: usize,
}

/// Splits text into tokens, one at a time.
struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'.'
}

impl<'a> Lexer<'a> {
    fn peek_byte(&self, ahead: usize) -> Option<u8> {
        self.src.as_bytes().get(self.pos + ahead).copied()
    }

    fn error(&self, pos: usize, message: impl Into<String>) -> ParseError {
        error_at(self.src, pos, message.into())
    }

    /// Skips whitespace and `#` comments.
    fn skip_trivia(&mut self) {
        let bytes = self.src.as_bytes();
        while let Some(&b) = bytes.get(self.pos) {
            if b.is_ascii_whitespace() {
                self.pos += 1;
            } else if b == b'#' {
                while let Some(&b) = bytes.get(self.pos) {
                    if b == b'\n' {
                        break;
                    }
                    self.pos += 1;
                }
            } else {
                break;
            }
        }
    }

    /// Consumes bytes while `f` holds and returns them.
    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        let bytes = self.src.as_bytes();
        while bytes.get(self.pos).is_some_and(|&b| f(b)) {
            self.pos += 1;
        }
        // Only ASCII bytes were consumed, so both ends are char boundaries.
        self.src.get(start..self.pos).unwrap_or("")
    }

    fn next(&mut self) -> Result<Token<'a>, ParseError> {
        self.skip_trivia();
        let pos = self.pos;
        let Some(b) = self.peek_byte(0) else {
            return Ok(Token { tok: Tok::Eof, pos });
        };
        let tok = match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => Tok::Ident(self.take_while(is_name_byte)),
            b'0'..=b'9' => Tok::Num(self.number()),
            b'-' if self.peek_byte(1) == Some(b'>') => {
                self.pos += 2;
                Tok::Arrow
            }
            b'-' | b'+' if self.peek_byte(1).is_some_and(is_name_byte) => Tok::Num(self.number()),
            b'.' if self.src[pos..].starts_with("...") => {
                self.pos += 3;
                Tok::Ellipsis
            }
            b'"' => Tok::Str(self.string()?),
            b'%' | b'@' => {
                self.pos += 1;
                let name = match self.peek_byte(0) {
                    Some(b'"') => Cow::Owned(self.string()?),
                    Some(b) if is_name_byte(b) => Cow::Borrowed(self.take_while(is_name_byte)),
                    _ => {
                        return Err(
                            self.error(pos, format!("expected a name after `{}`", b as char))
                        );
                    }
                };
                if b == b'%' {
                    Tok::Value(name)
                } else {
                    Tok::At(name)
                }
            }
            b'(' | b')' | b'[' | b']' | b'{' | b'}' | b'<' | b'>' | b',' | b':' | b'=' | b'*' => {
                self.pos += 1;
                Tok::Punct(b as char)
            }
            _ => {
                let c = self
                    .src
                    .get(pos..)
                    .and_then(|s| s.chars().next())
                    .unwrap_or('?');
                return Err(self.error(pos, format!("unexpected character {c:?}")));
            }
        };
        Ok(Token { tok, pos })
    }

    /// A number: an optional sign, then name bytes, with `+`/`-` allowed after a decimal exponent's `e`.
    fn number(&mut self) -> &'a str {
        let start = self.pos;
        let bytes = self.src.as_bytes();
        if matches!(bytes.get(self.pos), Some(b'-' | b'+')) {
            self.pos += 1;
        }
        let body = self.pos;
        let hex = matches!(bytes.get(body..body + 2), Some(b"0x" | b"0X"));
        while let Some(&b) = bytes.get(self.pos) {
            let exponent_sign = (b == b'-' || b == b'+')
                && !hex
                && self.pos > body
                && matches!(bytes[self.pos - 1], b'e' | b'E')
                && bytes[body].is_ascii_digit();
            if is_name_byte(b) || exponent_sign {
                self.pos += 1;
            } else {
                break;
            }
        }
        self.src.get(start..self.pos).unwrap_or("")
    }

    /// A quoted string with Rust escapes; the lexer is at the opening quote.
    fn string(&mut self) -> Result<String, ParseError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        let rest = self.src.get(self.pos..).unwrap_or("");
        let mut chars = rest.char_indices();
        let unterminated = |lx: &Lexer| lx.error(start, "unterminated string");
        loop {
            let Some((i, c)) = chars.next() else {
                return Err(unterminated(self));
            };
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                '\\' => {
                    let at = self.pos + i;
                    let Some((_, e)) = chars.next() else {
                        return Err(unterminated(self));
                    };
                    out.push(match e {
                        'n' => '\n',
                        'r' => '\r',
                        't' => '\t',
                        '0' => '\0',
                        '\\' => '\\',
                        '"' => '"',
                        '\'' => '\'',
                        'u' => {
                            let bad = |lx: &Lexer| {
                                lx.error(at, "invalid `\\u{...}` escape: expected 1 to 6 hex digits naming a char")
                            };
                            if chars.next().map(|(_, c)| c) != Some('{') {
                                return Err(bad(self));
                            }
                            let mut hex = String::new();
                            loop {
                                match chars.next() {
                                    Some((_, '}')) => break,
                                    Some((_, c)) if c.is_ascii_hexdigit() && hex.len() < 6 => hex.push(c),
                                    _ => return Err(bad(self)),
                                }
                            }
                            u32::from_str_radix(&hex, 16)
                                .ok()
                                .and_then(char::from_u32)
                                .ok_or_else(|| bad(self))?
                        }
                        other => {
                            return Err(self.error(at, format!("unknown escape `\\{other}`")));
                        }
                    });
                }
                c => out.push(c),
            }
        }
    }
}

/// A [`ParseError`] at byte offset `pos` of `src`.
fn error_at(src: &str, pos: usize, message: String) -> ParseError {
    let before = src.get(..pos).unwrap_or(src);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    ParseError {
        line: before.matches('\n').count() + 1,
        col: before.get(line_start..).unwrap_or("").chars().count() + 1,
        message,
    }
}

/// A float literal before it is given a width.
enum FloatLit<'a> {
    /// A decimal number, `inf` or `-inf`.
    Text(&'a str),
    /// `nan` or `-nan`: the format's canonical quiet NaN.
    Nan { negative: bool },
    /// `nan(0x...)`: a NaN given by its bits.
    Bits(u64),
}

/// A float format the parser reads: its width, canonical NaN and conversions.
trait ParseFloat: Sized {
    const WIDTH: u32;
    const CANONICAL_NAN: u64;
    fn from_text(s: &str) -> Option<Self>;
    fn from_bits_u64(b: u64) -> Self;
    fn is_nan(&self) -> bool;
}

macro_rules! parse_float {
    ($t:ty, $width:literal, $nan:expr, $text:expr, $bits:expr) => {
        impl ParseFloat for $t {
            const WIDTH: u32 = $width;
            const CANONICAL_NAN: u64 = $nan;
            fn from_text(s: &str) -> Option<Self> {
                $text(s)
            }
            fn from_bits_u64(b: u64) -> Self {
                $bits(b)
            }
            fn is_nan(&self) -> bool {
                <$t>::is_nan(*self)
            }
        }
    };
}

parse_float!(f32, 32, F32_NAN, |s: &str| s.parse::<f32>().ok(), |b| {
    f32::from_bits(b as u32)
});
parse_float!(
    f64,
    64,
    F64_NAN,
    |s: &str| s.parse::<f64>().ok(),
    f64::from_bits
);
parse_float!(
    f16,
    16,
    F16_NAN,
    |s: &str| s.parse::<f64>().ok().map(f16::from_f64),
    |b| { f16::from_bits(b as u16) }
);
parse_float!(
    bf16,
    16,
    BF16_NAN,
    |s: &str| s.parse::<f64>().ok().map(bf16::from_f64),
    |b| { bf16::from_bits(b as u16) }
);

/// Whether a number token is a float (it has a `.`, an exponent, or is `inf`/`nan`) rather than an integer.
fn is_float_text(s: &str) -> bool {
    let u = s.trim_start_matches(['-', '+']);
    if u.starts_with("0x") || u.starts_with("0X") {
        return false;
    }
    u.contains(['.', 'e', 'E']) || u == "inf" || u == "nan"
}

/// Reads an integer in decimal or `0x` hex.
fn int_text<T: FromStr + TryFrom<u64>>(s: &str) -> Option<T> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16)
            .ok()
            .and_then(|v| T::try_from(v).ok()),
        None => s.parse().ok(),
    }
}

/// One graph's value names in scope.
type Scope = HashMap<String, ValueId>;

struct Parser<'a> {
    lex: Lexer<'a>,
    peeked: Option<Token<'a>>,
    /// Current nesting of graphs and types.
    depth: usize,
}

impl<'a> Parser<'a> {
    fn error(&self, pos: usize, message: impl Into<String>) -> ParseError {
        self.lex.error(pos, message)
    }

    fn next(&mut self) -> Result<Token<'a>, ParseError> {
        match self.peeked.take() {
            Some(t) => Ok(t),
            None => self.lex.next(),
        }
    }

    fn peek(&mut self) -> Result<&Token<'a>, ParseError> {
        if self.peeked.is_none() {
            self.peeked = Some(self.lex.next()?);
        }
        match &self.peeked {
            Some(t) => Ok(t),
            None => Err(self.error(self.lex.pos, "internal error: no token")),
        }
    }

    /// Consumes punctuation `c` if it comes next.
    fn eat(&mut self, c: char) -> Result<bool, ParseError> {
        if self.peek()?.tok == Tok::Punct(c) {
            self.next()?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Consumes punctuation `c` or fails, naming `what` it is for.
    fn expect(&mut self, c: char, what: &str) -> Result<usize, ParseError> {
        let t = self.next()?;
        if t.tok == Tok::Punct(c) {
            Ok(t.pos)
        } else {
            Err(self.error(t.pos, format!("expected `{c}` {what}, found {}", t.tok)))
        }
    }

    /// Parses `item (, item)* ,? close` or an immediate `close`; the opening bracket is already consumed.
    fn list(
        &mut self,
        close: char,
        what: &str,
        mut item: impl FnMut(&mut Self) -> Result<(), ParseError>,
    ) -> Result<(), ParseError> {
        loop {
            if self.eat(close)? {
                return Ok(());
            }
            item(self)?;
            let t = self.next()?;
            match t.tok {
                Tok::Punct(',') => {}
                Tok::Punct(c) if c == close => return Ok(()),
                other => {
                    return Err(self.error(
                        t.pos,
                        format!("expected `,` or `{close}` in {what}, found {other}"),
                    ));
                }
            }
        }
    }

    fn enter(&mut self, pos: usize) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(pos, format!("nested more than {MAX_DEPTH} levels deep")));
        }
        Ok(())
    }

    /// A graph or attribute name: an identifier or a quoted string.
    fn ident_or_str(&mut self, what: &str) -> Result<(usize, String), ParseError> {
        let t = self.next()?;
        match t.tok {
            Tok::Ident(s) => Ok((t.pos, s.to_string())),
            Tok::Str(s) => Ok((t.pos, s)),
            other => Err(self.error(t.pos, format!("expected {what}, found {other}"))),
        }
    }

    /// `%name`.
    fn value_name(&mut self, what: &str) -> Result<(usize, String), ParseError> {
        let t = self.next()?;
        match t.tok {
            Tok::Value(s) => Ok((t.pos, s.into_owned())),
            other => Err(self.error(t.pos, format!("expected {what} (`%name`), found {other}"))),
        }
    }

    /// Adds a value to the graph, refusing a name already defined.
    fn define(
        &self,
        g: &mut Graph,
        scope: &mut Scope,
        pos: usize,
        name: String,
        ty: ValueType,
    ) -> Result<ValueId, ParseError> {
        if scope.contains_key(&name) {
            return Err(self.error(pos, format!("value `%{name}` is already defined")));
        }
        let id = ValueId(g.values.len() as u32);
        g.values.push(ValueInfo {
            name: name.clone(),
            ty,
            constant: None,
        });
        scope.insert(name, id);
        Ok(id)
    }

    fn resolve(&self, scope: &Scope, pos: usize, name: &str) -> Result<ValueId, ParseError> {
        scope.get(name).copied().ok_or_else(|| {
            self.error(
                pos,
                format!("value `%{name}` is not defined (a subgraph reads outer values through `capture`)"),
            )
        })
    }

    /// `graph NAME(%in: TYPE, ...) -> (%out, ...) { statements }`.
    fn graph(&mut self) -> Result<Graph, ParseError> {
        let t = self.next()?;
        if t.tok != Tok::Ident("graph") {
            return Err(self.error(t.pos, format!("expected `graph`, found {}", t.tok)));
        }
        let start = t.pos;
        self.enter(start)?;
        let (_, name) = self.ident_or_str("a graph name")?;
        let mut g = Graph::new(name);
        let mut scope = Scope::new();
        self.expect('(', "to open the graph's inputs")?;
        self.list(')', "the graph's inputs", |p| {
            let (pos, name) = p.value_name("a graph input")?;
            p.expect(':', "before the input's type")?;
            let ty = p.ty()?;
            let id = p.define(&mut g, &mut scope, pos, name, ty)?;
            g.inputs.push(id);
            Ok(())
        })?;
        let t = self.next()?;
        if t.tok != Tok::Arrow {
            return Err(self.error(
                t.pos,
                format!("expected `->` before the graph's outputs, found {}", t.tok),
            ));
        }
        self.expect('(', "to open the graph's outputs")?;
        let mut outputs = Vec::new();
        self.list(')', "the graph's outputs", |p| {
            outputs.push(p.value_name("a graph output")?);
            Ok(())
        })?;
        self.expect('{', "to open the graph's body")?;
        loop {
            let t = self.next()?;
            match t.tok {
                Tok::Punct('}') => break,
                Tok::Ident("capture") => {
                    let (pos, name) = self.value_name("the captured value")?;
                    self.expect(':', "before the capture's type")?;
                    let ty = self.ty()?;
                    let id = self.define(&mut g, &mut scope, pos, name, ty)?;
                    g.captures.push(id);
                }
                Tok::Ident("const") => {
                    let (pos, name) = self.value_name("the constant")?;
                    self.expect(':', "before the constant's type")?;
                    let ty = self.ty()?;
                    self.expect('=', "before the constant's data")?;
                    let tensor = match self.peek()?.tok {
                        Tok::Ident("tensor") => {
                            self.next()?;
                            self.tensor()?
                        }
                        _ => {
                            let at = self.peek()?.pos;
                            let known = match &ty {
                                ValueType::Tensor(t) => t.known_dims().map(|dims| (t.dtype, dims)),
                                _ => None,
                            };
                            let Some((dtype, shape)) = known else {
                                return Err(self.error(
                                    at,
                                    "a constant whose type has unknown dims needs `tensor TYPE [...]` data",
                                ));
                            };
                            self.data(dtype, shape)?
                        }
                    };
                    let id = self.define(&mut g, &mut scope, pos, name, ty)?;
                    g.values[id.index()].constant = Some(Arc::new(tensor));
                }
                Tok::Value(name) => {
                    let mut outs = Vec::new();
                    let mut current = (t.pos, name.into_owned());
                    loop {
                        self.expect(':', "before the node output's type")?;
                        let ty = self.ty()?;
                        outs.push((current.0, current.1, ty));
                        let t = self.next()?;
                        match t.tok {
                            Tok::Punct(',') => current = self.value_name("a node output")?,
                            Tok::Punct('=') => break,
                            other => {
                                return Err(self.error(
                                    t.pos,
                                    format!(
                                        "expected `,` or `=` after a node output, found {other}"
                                    ),
                                ));
                            }
                        }
                    }
                    let t = self.next()?;
                    let Tok::Ident(op) = t.tok else {
                        return Err(
                            self.error(t.pos, format!("expected an op name, found {}", t.tok))
                        );
                    };
                    self.node(&mut g, &mut scope, t.pos, op, outs)?;
                }
                Tok::Ident(op) if op.starts_with(|c: char| c.is_ascii_uppercase()) => {
                    self.node(&mut g, &mut scope, t.pos, op, Vec::new())?;
                }
                other => {
                    return Err(self.error(
                        t.pos,
                        format!("expected a statement (`capture`, `const`, a node) or `}}`, found {other}"),
                    ));
                }
            }
        }
        for (pos, name) in outputs {
            let id = self.resolve(&scope, pos, &name)?;
            g.outputs.push(id);
        }
        g.verify().map_err(|e| self.error(start, e.to_string()))?;
        self.depth -= 1;
        Ok(g)
    }

    /// Puts back the token just taken by [`Parser::next`].
    fn unread(&mut self, t: Token<'a>) {
        self.peeked = Some(t);
    }

    /// Consumes the identifier `word` or fails.
    fn keyword(&mut self, word: &str) -> Result<(), ParseError> {
        let t = self.next()?;
        if t.tok == Tok::Ident(word) {
            Ok(())
        } else {
            Err(self.error(t.pos, format!("expected `{word}`, found {}", t.tok)))
        }
    }

    /// The rest of a node after its outputs and `=`: `Op[attrs](inputs) @name`; `op` is at `op_pos`.
    fn node(
        &mut self,
        g: &mut Graph,
        scope: &mut Scope,
        op_pos: usize,
        op: &str,
        outs: Vec<(usize, String, ValueType)>,
    ) -> Result<(), ParseError> {
        let mut attrs = Attrs::new();
        if self.eat('[')? {
            self.list(']', "the attributes", |p| {
                let (pos, name) = p.ident_or_str("an attribute name")?;
                p.expect('=', "after the attribute name")?;
                let value = p.attr()?;
                if attrs.insert(name.clone(), value).is_some() {
                    return Err(p.error(pos, format!("attribute `{name}` is given twice")));
                }
                Ok(())
            })?;
        }
        self.expect('(', "to open the node's inputs")?;
        let mut inputs = Vec::new();
        self.list(')', "the node's inputs", |p| {
            let t = p.next()?;
            match t.tok {
                Tok::Value(name) => inputs.push(Some(p.resolve(scope, t.pos, &name)?)),
                Tok::Ident("_") => inputs.push(None),
                other => {
                    return Err(p.error(
                        t.pos,
                        format!("expected a node input (`%name` or `_`), found {other}"),
                    ));
                }
            }
            Ok(())
        })?;
        let mut name = String::new();
        if matches!(self.peek()?.tok, Tok::At(_))
            && let Tok::At(n) = self.next()?.tok
        {
            name = n.into_owned();
        }
        let op = match Op::from_attrs(op, attrs) {
            Ok(Some(op)) => op,
            Ok(None) => return Err(self.error(op_pos, format!("unknown op `{op}`"))),
            Err(e) => return Err(self.error(op_pos, format!("op `{op}`: {e}"))),
        };
        let mut outputs = Vec::with_capacity(outs.len());
        for (pos, name, ty) in outs {
            outputs.push(self.define(g, scope, pos, name, ty)?);
        }
        g.nodes.push(Node {
            name,
            op,
            inputs,
            outputs,
        });
        Ok(())
    }

    /// A type: `f32[batch,3]`, `f32[*]`, `seq<TYPE>`, `opt<TYPE>`.
    fn ty(&mut self) -> Result<ValueType, ParseError> {
        let t = self.next()?;
        let Tok::Ident(name) = t.tok else {
            return Err(self.error(t.pos, format!("expected a type, found {}", t.tok)));
        };
        if name == "seq" || name == "opt" {
            self.enter(t.pos)?;
            self.expect('<', &format!("after `{name}`"))?;
            let inner = Box::new(self.ty()?);
            self.expect('>', &format!("to close `{name}<...`"))?;
            self.depth -= 1;
            return Ok(if name == "seq" {
                ValueType::Sequence(inner)
            } else {
                ValueType::Optional(inner)
            });
        }
        let Some(dtype) = DType::from_name(name) else {
            return Err(self.error(t.pos, format!("unknown type `{name}`")));
        };
        self.expect(
            '[',
            "after the dtype (`f32[]` is a scalar, `f32[*]` has unknown rank)",
        )?;
        if self.eat('*')? {
            self.expect(']', "after `[*`")?;
            return Ok(ValueType::Tensor(TensorType::unranked(dtype)));
        }
        let mut dims = Vec::new();
        self.list(']', "the dims", |p| {
            let t = p.next()?;
            dims.push(match t.tok {
                Tok::Num(s) => match s.parse::<usize>() {
                    Ok(n) => Dim::Known(n),
                    Err(_) => return Err(p.error(t.pos, format!("invalid dim `{s}`"))),
                },
                Tok::Ident(s) => Dim::Sym(s.to_string()),
                Tok::Str(s) => Dim::Sym(s),
                other => {
                    return Err(p.error(
                        t.pos,
                        format!("expected a dim (a size or a symbol), found {other}"),
                    ));
                }
            });
            Ok(())
        })?;
        Ok(ValueType::Tensor(TensorType::new(dtype, dims)))
    }

    /// `TYPE [DATA]` after the keyword `tensor`.
    fn tensor(&mut self) -> Result<Tensor, ParseError> {
        let at = self.peek()?.pos;
        let ty = self.ty()?;
        let known = match &ty {
            ValueType::Tensor(t) => t.known_dims().map(|dims| (t.dtype, dims)),
            _ => None,
        };
        let Some((dtype, shape)) = known else {
            return Err(self.error(at, "a tensor literal needs a tensor type with known dims"));
        };
        self.data(dtype, shape)
    }

    /// `[e0, e1, ...]`: `shape`'s elements of `dtype` in row-major order.
    fn data(&mut self, dtype: DType, shape: Vec<usize>) -> Result<Tensor, ParseError> {
        let open = self.expect('[', "to open the data")?;
        let n = crate::tensor::checked_numel(&shape, dtype)
            .map_err(|e| self.error(open, e.to_string()))?;
        // Reserve what the type says, but never more than the rest of the text could hold.
        let cap = n.min(self.lex.src.len().saturating_sub(self.lex.pos) / 2 + 1);
        let data = match dtype {
            DType::Bool => Data::Bool(self.elems(cap, Self::bool)?),
            DType::U8 => Data::U8(self.numbers(cap, int_text::<u8>, Self::int::<u8>)?),
            DType::I8 => Data::I8(self.numbers(cap, int_text::<i8>, Self::int::<i8>)?),
            DType::U16 => Data::U16(self.numbers(cap, int_text::<u16>, Self::int::<u16>)?),
            DType::I16 => Data::I16(self.numbers(cap, int_text::<i16>, Self::int::<i16>)?),
            DType::U32 => Data::U32(self.numbers(cap, int_text::<u32>, Self::int::<u32>)?),
            DType::I32 => Data::I32(self.numbers(cap, int_text::<i32>, Self::int::<i32>)?),
            DType::U64 => Data::U64(self.numbers(cap, int_text::<u64>, Self::int::<u64>)?),
            DType::I64 => Data::I64(self.numbers(cap, int_text::<i64>, Self::int::<i64>)?),
            DType::F16 => Data::F16(self.numbers(cap, f16::from_text, Self::float::<f16>)?),
            DType::BF16 => Data::BF16(self.numbers(cap, bf16::from_text, Self::float::<bf16>)?),
            DType::F32 => Data::F32(self.numbers(cap, f32::from_text, Self::float::<f32>)?),
            DType::F64 => Data::F64(self.numbers(cap, f64::from_text, Self::float::<f64>)?),
            DType::C64 => Data::C64(self.complex::<f32>(cap)?),
            DType::C128 => Data::C128(self.complex::<f64>(cap)?),
            DType::String => Data::String(self.elems(cap, Self::string)?),
            DType::F8E4M3FN
            | DType::F8E4M3FNUZ
            | DType::F8E5M2
            | DType::F8E5M2FNUZ
            | DType::U4
            | DType::I4
            | DType::F4E2M1
            | DType::F8E8M0
            | DType::U2
            | DType::I2 => Data::Bits(self.numbers(cap, int_text::<u8>, Self::int::<u8>)?),
        };
        Tensor::from_data(dtype, shape, data).map_err(|e| self.error(open, e.to_string()))
    }

    /// The elements of a list whose `[` is consumed, read by `item`.
    fn elems<T>(
        &mut self,
        cap: usize,
        mut item: impl FnMut(&mut Self) -> Result<T, ParseError>,
    ) -> Result<Vec<T>, ParseError> {
        let mut v = Vec::with_capacity(cap);
        self.list(']', "the list", |p| {
            let t = p.peek()?;
            if t.tok == Tok::Ellipsis {
                let pos = t.pos;
                return Err(p.error(
                    pos,
                    "this data was elided when it was printed (`...`); it cannot be parsed back",
                ));
            }
            v.push(item(p)?);
            Ok(())
        })?;
        Ok(v)
    }

    /// Like [`Parser::elems`] for numbers, with a fast path that reads plain numbers straight from the text
    /// (weights hold hundreds of millions of them). Anything else, errors included, goes through `item`; `fast`
    /// must accept exactly the number tokens that `item` accepts, with the same value.
    fn numbers<T>(
        &mut self,
        cap: usize,
        fast: impl Fn(&str) -> Option<T>,
        mut item: impl FnMut(&mut Self) -> Result<T, ParseError>,
    ) -> Result<Vec<T>, ParseError> {
        let src: &'a str = self.lex.src;
        let bytes = src.as_bytes();
        let mut v = Vec::with_capacity(cap);
        loop {
            let mut quick = None;
            if self.peeked.is_none() {
                let save = self.lex.pos;
                self.lex.skip_trivia();
                let at = self.lex.pos;
                let numeric = match bytes.get(at) {
                    Some(b) if b.is_ascii_digit() => true,
                    Some(b'-') => bytes.get(at + 1).is_some_and(u8::is_ascii_digit),
                    _ => false,
                };
                if numeric {
                    quick = fast(self.lex.number());
                }
                if quick.is_none() {
                    self.lex.pos = save;
                }
            }
            match quick {
                Some(x) => v.push(x),
                None => {
                    if self.eat(']')? {
                        return Ok(v);
                    }
                    let t = self.peek()?;
                    if t.tok == Tok::Ellipsis {
                        let pos = t.pos;
                        return Err(self.error(
                            pos,
                            "this data was elided when it was printed (`...`); it cannot be parsed back",
                        ));
                    }
                    v.push(item(self)?);
                }
            }
            if self.peeked.is_none() {
                self.lex.skip_trivia();
                match bytes.get(self.lex.pos) {
                    Some(b',') => {
                        self.lex.pos += 1;
                        continue;
                    }
                    Some(b']') => {
                        self.lex.pos += 1;
                        return Ok(v);
                    }
                    _ => {}
                }
            }
            let t = self.next()?;
            match t.tok {
                Tok::Punct(',') => {}
                Tok::Punct(']') => return Ok(v),
                other => {
                    return Err(self.error(
                        t.pos,
                        format!("expected `,` or `]` in the list, found {other}"),
                    ));
                }
            }
        }
    }

    /// Complex numbers `(re, im), ...` as interleaved storage.
    fn complex<T: ParseFloat>(&mut self, cap: usize) -> Result<Vec<T>, ParseError> {
        let pairs = self.elems(cap, |p| {
            p.expect('(', "to open a complex number `(re, im)`")?;
            let re = p.float::<T>()?;
            p.expect(',', "between the real and imaginary parts")?;
            let im = p.float::<T>()?;
            p.expect(')', "to close a complex number")?;
            Ok([re, im])
        })?;
        Ok(pairs.into_iter().flatten().collect())
    }

    fn bool(&mut self) -> Result<bool, ParseError> {
        let t = self.next()?;
        match t.tok {
            Tok::Ident("true") => Ok(true),
            Tok::Ident("false") => Ok(false),
            other => Err(self.error(t.pos, format!("expected `true` or `false`, found {other}"))),
        }
    }

    fn string(&mut self) -> Result<String, ParseError> {
        let t = self.next()?;
        match t.tok {
            Tok::Str(s) => Ok(s),
            other => Err(self.error(t.pos, format!("expected a string, found {other}"))),
        }
    }

    fn int<T: FromStr + TryFrom<u64>>(&mut self) -> Result<T, ParseError> {
        let t = self.next()?;
        match t.tok {
            Tok::Num(s) => int_text::<T>(s).ok_or_else(|| {
                self.error(
                    t.pos,
                    format!(
                        "`{s}` is not an integer in range for {}",
                        std::any::type_name::<T>()
                    ),
                )
            }),
            other => Err(self.error(t.pos, format!("expected an integer, found {other}"))),
        }
    }

    fn float<T: ParseFloat>(&mut self) -> Result<T, ParseError> {
        let t = self.next()?;
        self.float_token(t)
    }

    /// A float starting at the token `t` (already taken); reads the `(0x...)` of `nan(0x...)`.
    fn float_token<T: ParseFloat>(&mut self, t: Token<'a>) -> Result<T, ParseError> {
        let lit = match t.tok {
            Tok::Num("nan" | "+nan") => FloatLit::Nan { negative: false },
            Tok::Num("-nan") => FloatLit::Nan { negative: true },
            Tok::Num(s) => FloatLit::Text(s),
            Tok::Ident("inf") => FloatLit::Text("inf"),
            Tok::Ident("nan") => {
                if self.eat('(')? {
                    let b = self.next()?;
                    let bits = match b.tok {
                        Tok::Num(h) if h.starts_with("0x") => int_text::<u64>(h),
                        _ => None,
                    };
                    let Some(bits) = bits else {
                        return Err(
                            self.error(b.pos, "expected the NaN's bits in hex (`nan(0x7fc00001)`)")
                        );
                    };
                    self.expect(')', "to close `nan(...`")?;
                    FloatLit::Bits(bits)
                } else {
                    FloatLit::Nan { negative: false }
                }
            }
            other => return Err(self.error(t.pos, format!("expected a float, found {other}"))),
        };
        match lit {
            FloatLit::Text(s) => {
                T::from_text(s).ok_or_else(|| self.error(t.pos, format!("invalid float `{s}`")))
            }
            FloatLit::Nan { negative } => {
                let sign = if negative { 1u64 << (T::WIDTH - 1) } else { 0 };
                Ok(T::from_bits_u64(T::CANONICAL_NAN | sign))
            }
            FloatLit::Bits(bits) => {
                let x = T::from_bits_u64(bits);
                if (T::WIDTH < 64 && bits >> T::WIDTH != 0) || !x.is_nan() {
                    return Err(self.error(
                        t.pos,
                        format!("{bits:#x} is not the bit pattern of a {}-bit NaN", T::WIDTH),
                    ));
                }
                Ok(x)
            }
        }
    }

    /// An attribute value (see the module docs for the forms).
    fn attr(&mut self) -> Result<Attr, ParseError> {
        let t = self.next()?;
        let pos = t.pos;
        Ok(match t.tok {
            Tok::Num(s) if !is_float_text(s) => match int_text::<i64>(s) {
                Some(i) => Attr::Int(i),
                None => return Err(self.error(pos, format!("`{s}` is not a 64-bit integer"))),
            },
            Tok::Num(_) | Tok::Ident("nan" | "inf") => Attr::Float(self.float_token(t)?),
            Tok::Str(s) => Attr::String(s),
            Tok::Ident("tensor") => Attr::Tensor(Arc::new(self.tensor()?)),
            Tok::Ident("graph") => {
                self.unread(t);
                Attr::Graph(Arc::new(self.graph()?))
            }
            Tok::Ident("type") => Attr::Type(self.ty()?),
            Tok::Ident(kind @ ("ints" | "floats" | "strings" | "tensors" | "graphs" | "types")) => {
                self.expect('[', &format!("after `{kind}`"))?;
                self.attr_list(kind)?
            }
            Tok::Punct('[') => {
                let first = self.peek()?;
                let kind = match &first.tok {
                    Tok::Num(s) if is_float_text(s) => "floats",
                    Tok::Ident("nan" | "inf") => "floats",
                    Tok::Num(_) => "ints",
                    Tok::Str(_) => "strings",
                    Tok::Ident("tensor") => "tensors",
                    Tok::Ident("graph") => "graphs",
                    Tok::Ident("type") => "types",
                    Tok::Punct(']') => {
                        return Err(self.error(
                            pos,
                            "an empty list must name its kind: `ints[]`, `floats[]`, `strings[]`, `tensors[]`, \
                             `graphs[]` or `types[]`",
                        ));
                    }
                    other => {
                        let msg = format!("expected a list element, found {other}");
                        let at = first.pos;
                        return Err(self.error(at, msg));
                    }
                };
                self.attr_list(kind)?
            }
            other => {
                return Err(self.error(pos, format!("expected an attribute value, found {other}")));
            }
        })
    }

    /// A list attribute of `kind` whose `[` is consumed.
    fn attr_list(&mut self, kind: &str) -> Result<Attr, ParseError> {
        Ok(match kind {
            "ints" => Attr::Ints(self.elems(0, Self::int::<i64>)?),
            "floats" => Attr::Floats(self.elems(0, Self::float::<f32>)?),
            "strings" => Attr::Strings(self.elems(0, Self::string)?),
            "tensors" => Attr::Tensors(self.elems(0, |p| {
                p.keyword("tensor")?;
                Ok(Arc::new(p.tensor()?))
            })?),
            "graphs" => Attr::Graphs(self.elems(0, |p| Ok(Arc::new(p.graph()?)))?),
            _ => Attr::Types(self.elems(0, |p| {
                p.keyword("type")?;
                p.ty()
            })?),
        })
    }
}

/// Runs `f` on a parser of `text` and checks that nothing follows, for tests.
#[cfg(test)]
fn parse_part<T>(
    text: &str,
    f: impl FnOnce(&mut Parser) -> Result<T, ParseError>,
) -> Result<T, ParseError> {
    let mut p = Parser {
        lex: Lexer { src: text, pos: 0 },
        peeked: None,
        depth: 0,
    };
    let x = f(&mut p)?;
    let t = p.next()?;
    if t.tok != Tok::Eof {
        return Err(p.error(
            t.pos,
            format!("expected the end of the text, found {}", t.tok),
        ));
    }
    Ok(x)
}

/// Parses one attribute value, for tests.
#[cfg(test)]
pub(super) fn parse_attr(text: &str) -> Result<Attr, ParseError> {
    parse_part(text, |p| p.attr())
}

/// Parses one type, for tests.
#[cfg(test)]
pub(super) fn parse_type(text: &str) -> Result<ValueType, ParseError> {
    parse_part(text, |p| p.ty())
}
