//! Shape values: small integer tensors whose elements are known integers or symbolic dims.
//!
//! Exporters compute reshape targets at run time: `Concat(Unsqueeze(Gather(Shape(x), 0)), ..., [4, 16])`. Constant
//! folding cannot see through that when `x` has symbolic dims, so the IR's inference gives such a `Reshape` fresh
//! symbols, and every rule that compares dims downstream gives up. The analysis therefore tracks, next to constant
//! values, the *shape value* of rank-0/1 integer tensors built from `Shape` by `Gather`, `Slice`, `Concat`,
//! `Unsqueeze`, `Squeeze`, `Cast` and `Identity`: each element is a known integer or the symbol of an input dim.
//! A `Reshape` whose target has a shape value then gets exact dims ([`reshape_dims`]), and the clean-up rule
//! `reshape-dynamic-to-static` replaces the computed target by a constant ([`static_target`]).

use jiuzhou_ir::{DType, Dim, Op, Tensor, ValueType};

/// The most elements a shape value may have.
pub const MAX_ELEMS: usize = 16;

/// One element of a shape value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Elem {
    /// A known integer (possibly negative, as in a reshape target's `-1`).
    Int(i64),
    /// The run-time size of a symbolic dim.
    Sym(String),
}

/// The value of an integer tensor of rank 0 (`scalar`) or 1, element by element.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ShapeValue {
    /// Whether the tensor is a scalar (then `elems` has one element).
    pub scalar: bool,
    /// The elements.
    pub elems: Vec<Elem>,
}

impl ShapeValue {
    fn vector(elems: Vec<Elem>) -> ShapeValue {
        ShapeValue {
            scalar: false,
            elems,
        }
    }

    /// The elements as integers, if all are known.
    pub fn ints(&self) -> Option<Vec<i64>> {
        self.elems
            .iter()
            .map(|e| match e {
                Elem::Int(v) => Some(*v),
                Elem::Sym(_) => None,
            })
            .collect()
    }
}

fn is_index_type(d: DType) -> bool {
    matches!(d, DType::I64 | DType::I32)
}

/// The shape value of a constant: small rank-0/1 `i64`/`i32` tensors.
pub fn of_const(t: &Tensor) -> Option<ShapeValue> {
    if !is_index_type(t.dtype()) || t.rank() > 1 || t.len() > MAX_ELEMS {
        return None;
    }
    Some(ShapeValue {
        scalar: t.rank() == 0,
        elems: t.to_i64_vec()?.into_iter().map(Elem::Int).collect(),
    })
}

fn dim_elem(d: &Dim) -> Elem {
    match d {
        Dim::Known(n) => Elem::Int(*n as i64),
        Dim::Sym(s) => Elem::Sym(s.clone()),
    }
}

/// A constant index-like input: its integers.
fn ints(v: Option<&ShapeValue>) -> Option<Vec<i64>> {
    v?.ints()
}

/// Normalizes a possibly negative index into `0..len`.
fn norm(i: i64, len: usize) -> Option<usize> {
    let j = if i < 0 { i.checked_add(len as i64)? } else { i };
    usize::try_from(j).ok().filter(|&j| j < len)
}

/// Clamps a `Slice` bound for a positive step.
fn clamp(v: i64, len: usize) -> usize {
    let n = len as i64;
    let v = if v < 0 { v.saturating_add(n) } else { v };
    v.clamp(0, n) as usize
}

/// The shape value of `op`'s single output from its inputs' shape values (`values`, `None` where unknown or absent)
/// and static types (`types`).
pub fn propagate(
    op: &Op,
    values: &[Option<&ShapeValue>],
    types: &[Option<&ValueType>],
) -> Option<ShapeValue> {
    let value = |i: usize| values.get(i).copied().flatten();
    let out = match op {
        Op::Shape(s) => {
            let dims = types
                .first()
                .copied()
                .flatten()?
                .as_tensor()?
                .shape
                .clone()?;
            let r = dims.len();
            let start = clamp(s.start, r);
            let end = clamp(s.end.unwrap_or(r as i64), r).max(start);
            ShapeValue::vector(dims[start..end].iter().map(dim_elem).collect())
        }
        Op::Identity(_) => value(0)?.clone(),
        Op::Cast(c) => {
            let to = DType::from_onnx_code(c.to)?;
            if !is_index_type(to) {
                return None;
            }
            value(0)?.clone()
        }
        Op::Gather(g) => {
            let data = value(0)?;
            if data.scalar || (g.axis != 0 && g.axis != -1) {
                return None;
            }
            let idx = value(1)?;
            let picked = idx
                .ints()?
                .into_iter()
                .map(|i| norm(i, data.elems.len()).map(|j| data.elems[j].clone()))
                .collect::<Option<Vec<_>>>()?;
            ShapeValue {
                scalar: idx.scalar,
                elems: picked,
            }
        }
        Op::Unsqueeze(_) => {
            let x = value(0)?;
            let axes = ints(value(1))?;
            if !x.scalar || !(axes == [0] || axes == [-1]) {
                return None;
            }
            ShapeValue::vector(x.elems.clone())
        }
        Op::Squeeze(_) => {
            let x = value(0)?;
            let axes_ok = match values.get(1).copied() {
                None => true,
                Some(v) => {
                    let a = v?.ints()?;
                    a == [0] || a == [-1]
                }
            };
            if x.scalar || x.elems.len() != 1 || !axes_ok {
                return None;
            }
            ShapeValue {
                scalar: true,
                elems: x.elems.clone(),
            }
        }
        Op::Concat(c) => {
            if c.axis != 0 && c.axis != -1 {
                return None;
            }
            let mut elems = Vec::new();
            for i in 0..values.len() {
                let v = value(i)?;
                if v.scalar {
                    return None;
                }
                elems.extend(v.elems.iter().cloned());
            }
            ShapeValue::vector(elems)
        }
        Op::Slice(_) => {
            let data = value(0)?;
            if data.scalar {
                return None;
            }
            let (starts, ends) = (ints(value(1))?, ints(value(2))?);
            let axes_ok = values.len() <= 3
                || values[3].is_none()
                || matches!(ints(value(3)).as_deref(), Some([0] | [-1]));
            let steps_ok = values.len() <= 4
                || values[4].is_none()
                || matches!(ints(value(4)).as_deref(), Some([1]));
            let ([start], [end]) = (starts.as_slice(), ends.as_slice()) else {
                return None;
            };
            if !axes_ok || !steps_ok {
                return None;
            }
            let n = data.elems.len();
            let (a, b) = (clamp(*start, n), clamp(*end, n));
            ShapeValue::vector(data.elems[a..b.max(a)].to_vec())
        }
        _ => return None,
    };
    (out.elems.len() <= MAX_ELEMS).then_some(out)
}

/// The dims of `Reshape(x, target)` for input dims `input` and a target with a shape value, or `None` when they
/// cannot be told exactly (an element that is neither a known size, `0`, `-1` nor a symbol; a `-1` whose size does
/// not follow by cancelling dims).
pub fn reshape_dims(input: &[Dim], target: &ShapeValue, allowzero: bool) -> Option<Vec<Dim>> {
    if target.scalar {
        return None;
    }
    let mut out: Vec<Option<Dim>> = Vec::with_capacity(target.elems.len());
    let mut infer_at = None;
    for (i, e) in target.elems.iter().enumerate() {
        out.push(match e {
            Elem::Int(-1) => {
                if infer_at.replace(i).is_some() {
                    return None;
                }
                None
            }
            Elem::Int(0) if !allowzero => Some(input.get(i)?.clone()),
            Elem::Int(n) if *n >= 0 => Some(Dim::Known(*n as usize)),
            Elem::Int(_) => return None,
            Elem::Sym(s) => Some(Dim::Sym(s.clone())),
        });
    }
    if let Some(at) = infer_at {
        // Cancel the other entries against the input's dims.
        let mut rest: Vec<&Dim> = input.iter().collect();
        let mut den: u128 = 1;
        for d in out.iter().flatten() {
            match d {
                Dim::Known(n) => den = den.checked_mul(*n as u128)?,
                Dim::Sym(_) => {
                    let p = rest.iter().position(|x| *x == d)?;
                    rest.remove(p);
                }
            }
        }
        let mut num: u128 = 1;
        let mut syms = Vec::new();
        for d in rest {
            match d {
                Dim::Known(n) => num = num.checked_mul(*n as u128)?,
                Dim::Sym(_) => syms.push(d.clone()),
            }
        }
        out[at] = Some(match syms.as_slice() {
            [] if den != 0 && num.is_multiple_of(den) => Dim::Known((num / den) as usize),
            [s] if num == den && den != 0 => s.clone(),
            _ => return None,
        });
    } else {
        // Without a -1 the counts must agree exactly (same symbols, same known product).
        let mut rest: Vec<&Dim> = input.iter().collect();
        let (mut a, mut b) = (1u128, 1u128);
        for d in out.iter().flatten() {
            match d {
                Dim::Known(n) => b = b.checked_mul(*n as u128)?,
                Dim::Sym(_) => {
                    let p = rest.iter().position(|x| *x == d)?;
                    rest.remove(p);
                }
            }
        }
        for d in rest {
            a = a.checked_mul(d.known()? as u128)?;
        }
        if a != b {
            return None;
        }
    }
    out.into_iter().collect()
}

/// A constant target that does what a computed `target` does for an input with dims `input`: known sizes stay,
/// a symbol at the position where the input has the same symbol becomes `0` (copy the input's dim). `None` unless
/// every element is one of those (then the reshape is independent of run-time values other than `x`'s own dims).
pub fn static_target(input: &[Dim], target: &ShapeValue) -> Option<Vec<i64>> {
    if target.scalar {
        return None;
    }
    target
        .elems
        .iter()
        .enumerate()
        .map(|(i, e)| match e {
            Elem::Int(n) if *n > 0 || *n == -1 => Some(*n),
            Elem::Int(_) => None,
            Elem::Sym(s) => match input.get(i) {
                Some(Dim::Sym(t)) if t == s => Some(0),
                _ => None,
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(s: &str) -> Dim {
        Dim::Sym(s.into())
    }

    #[test]
    fn reshape_dims_cancel_symbols() {
        let input = [sym("b"), sym("s"), Dim::Known(64)];
        let t = ShapeValue::vector(vec![
            Elem::Sym("b".into()),
            Elem::Sym("s".into()),
            Elem::Int(4),
            Elem::Int(-1),
        ]);
        assert_eq!(
            reshape_dims(&input, &t, false),
            Some(vec![sym("b"), sym("s"), Dim::Known(4), Dim::Known(16)])
        );
        assert_eq!(static_target(&input, &t), Some(vec![0, 0, 4, -1]));
        // A symbol that is not the input's dim at that position cannot be copied.
        let swapped = ShapeValue::vector(vec![
            Elem::Sym("s".into()),
            Elem::Sym("b".into()),
            Elem::Int(64),
        ]);
        assert_eq!(static_target(&input, &swapped), None);
        assert_eq!(
            reshape_dims(&input, &swapped, false),
            Some(vec![sym("s"), sym("b"), Dim::Known(64)])
        );
        // Counts that do not agree give nothing.
        let bad = ShapeValue::vector(vec![Elem::Sym("b".into()), Elem::Int(64)]);
        assert_eq!(reshape_dims(&input, &bad, false), None);
    }
}
