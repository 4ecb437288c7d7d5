//! TASO-style substitutions: parallel MatMuls that share an input merged into one, and the reverse.
//!
//! `MatMul(x, W₁), …, MatMul(x, Wₙ)` (constant 2-D weights with the same row count, as the Q/K/V projections of
//! attention) equal the pieces of `Split(MatMul(x, [W₁ … Wₙ]), axis = −1)`: one larger GEMM instead of n small
//! ones. `split-matmul` is the reverse, for models exported with merged weights.
//!
//! **Extraction note.** Under op count the merged form is smaller (one MatMul and one Split for n MatMuls), but the
//! DAG-aware greedy extractor decides class by class: for each of the n classes alone, `MatMul(x, Wᵢ)` (one node)
//! is cheaper than `get.i(Split(MatMul(x, W)))` (two nodes), so the saving, which only appears when all n classes
//! switch together, is never seen and the merged form is never chosen. [`extract`](super::super::extract)
//! therefore tries, after the greedy pass, to switch every class read out of one multi-output node at once and
//! keeps the switch when the whole extraction gets cheaper.

use egg::{Applier, Id, PatternAst, Subst, Symbol, rewrite as rw};
use jiuzhou_ir::{Data, Op, Tensor, ops};

use super::super::analysis::{GraphAnalysis, IrEGraph, attrs_of};
use super::super::lang::ENode;
use super::{Rule, add_attrs, add_const, add_op, bound, konst, union_into};

/// The TASO-style rules.
#[rustfmt::skip]
pub fn rules() -> Vec<Rule> {
    vec![
        // MatMul(x, W₁) … MatMul(x, Wₙ) == get.i(Split(MatMul(x, Concat(W₁ … Wₙ, axis = 1)), [N₁ … Nₙ], axis = −1))
        // for constant f32/f64 Wᵢ: [K, Nᵢ] (at most 8 merged, in class order).
        rw!("merge-parallel-matmul"; "(MatMul {} ?x ?w)" => { MergeParallel }),
        // get.i(Split(MatMul(x, W), [N₁ … Nₙ], axis = −1)) == MatMul(x, W[:, o_i .. o_i + N_i]) for constant 2-D W.
        rw!("split-matmul";          "(MatMul {} ?x ?w)" => { SplitMatMul }),
    ]
}

/// The most MatMuls merged into one.
const MAX_MERGED: usize = 8;

/// A constant 2-D float weight: rows, columns and data (f32 or f64).
fn weight(eg: &IrEGraph, id: Id) -> Option<(usize, usize, Data)> {
    let t = konst(eg, id)?;
    let [k, n] = *t.shape() else { return None };
    match t.data() {
        Data::F32(_) | Data::F64(_) => Some((k, n, t.data().clone())),
        _ => None,
    }
}

/// Concatenates 2-D row-major weights with `k` rows along their columns.
fn concat_columns(k: usize, parts: &[(usize, Data)]) -> Option<Tensor> {
    let n: usize = parts.iter().map(|(n, _)| n).sum();
    macro_rules! cat {
        ($variant:ident, $t:ty) => {{
            let mut out: Vec<$t> = Vec::with_capacity(k * n);
            for r in 0..k {
                for (ni, d) in parts {
                    let Data::$variant(v) = d else { return None };
                    out.extend_from_slice(v.get(r * ni..(r + 1) * ni)?);
                }
            }
            Tensor::from_vec(vec![k, n], out).ok()
        }};
    }
    match parts.first()?.1 {
        Data::F32(_) => cat!(F32, f32),
        Data::F64(_) => cat!(F64, f64),
        _ => None,
    }
}

/// Columns `from..to` of a 2-D row-major weight.
fn columns(k: usize, n: usize, d: &Data, from: usize, to: usize) -> Option<Tensor> {
    macro_rules! cols {
        ($v:expr) => {{
            let mut out = Vec::with_capacity(k * (to - from));
            for r in 0..k {
                out.extend_from_slice($v.get(r * n + from..r * n + to)?);
            }
            Tensor::from_vec(vec![k, to - from], out).ok()
        }};
    }
    match d {
        Data::F32(v) => cols!(v),
        Data::F64(v) => cols!(v),
        _ => None,
    }
}

/// Whether some Split node reads class `id`.
fn is_split_input(eg: &IrEGraph, id: Id) -> bool {
    eg[id].parents().any(|p| {
        eg[eg.find(p)].nodes.iter().any(|n| {
            matches!(n, ENode::Op { name: "Split", children, .. } if eg.find(children[1]) == id)
        })
    })
}

/// Merges the MatMuls with constant weights that read the same `x` as the matched one.
struct MergeParallel;

impl Applier<ENode, GraphAnalysis> for MergeParallel {
    fn apply_one(
        &self,
        eg: &mut IrEGraph,
        _eclass: Id,
        s: &Subst,
        _: Option<&PatternAst<ENode>>,
        rule: Symbol,
    ) -> Vec<Id> {
        let x = bound(eg, s, "?x");
        let Some((k, _, first)) = weight(eg, bound(eg, s, "?w")) else {
            return vec![];
        };
        // Every MatMul(x, W) with a constant W of k rows and the same dtype: (its class, W's class).
        let mut siblings: Vec<(Id, Id)> = Vec::new();
        for p in eg[x].parents().collect::<Vec<_>>() {
            let class = eg.find(p);
            for n in &eg[class].nodes {
                let ENode::Op {
                    name: "MatMul",
                    outputs: 1,
                    children,
                } = n
                else {
                    continue;
                };
                if children.len() != 3 {
                    continue;
                }
                let (a, w) = (eg.find(children[1]), eg.find(children[2]));
                let fits = weight(eg, w).is_some_and(|(kk, _, d)| {
                    kk == k && std::mem::discriminant(&d) == std::mem::discriminant(&first)
                });
                // A product that is already split (a merged one) is not merged again: merging it would grow
                // ever larger weights with the pieces it is split into.
                if a == x && fits && !siblings.contains(&(class, w)) && !is_split_input(eg, class) {
                    siblings.push((class, w));
                }
            }
        }
        siblings.sort();
        siblings.dedup_by_key(|(c, _)| *c);
        siblings.truncate(MAX_MERGED);
        if siblings.len() < 2 {
            return vec![];
        }
        let key: Vec<Id> = std::iter::once(x)
            .chain(siblings.iter().map(|(c, _)| *c))
            .collect();
        if !super::first_application(eg, rule, key) {
            return vec![];
        }
        let parts: Option<Vec<(usize, Data)>> = siblings
            .iter()
            .map(|(_, w)| weight(eg, *w).map(|(_, n, d)| (n, d)))
            .collect();
        let Some(parts) = parts else { return vec![] };
        let Some(wcat) = concat_columns(k, &parts) else {
            return vec![];
        };
        let sizes: Vec<i64> = parts.iter().map(|(n, _)| *n as i64).collect();
        let wcat = add_const(eg, wcat);
        let mm = add_op(eg, &Op::MatMul(ops::MatMul::default()), &[x, wcat]);
        let sizes = add_const(eg, Tensor::vector(sizes));
        let split = Op::Split(ops::Split {
            axis: -1,
            num_outputs: None,
        });
        let a = add_attrs(eg, &split);
        let tuple = eg.add(ENode::Op {
            name: "Split",
            outputs: siblings.len() as u32,
            children: vec![a, mm, sizes],
        });
        let mut changed = Vec::new();
        for (i, (class, _)) in siblings.iter().enumerate() {
            let get = eg.add(ENode::Get {
                index: i as u32,
                tuple: [tuple],
            });
            changed.extend(union_into(eg, *class, get));
        }
        changed
    }
}

/// Splits a MatMul whose result is only split along its last axis into one MatMul per piece.
struct SplitMatMul;

impl Applier<ENode, GraphAnalysis> for SplitMatMul {
    fn apply_one(
        &self,
        eg: &mut IrEGraph,
        eclass: Id,
        s: &Subst,
        _: Option<&PatternAst<ENode>>,
        rule: Symbol,
    ) -> Vec<Id> {
        let (x, w) = (bound(eg, s, "?x"), bound(eg, s, "?w"));
        let Some((k, n, data)) = weight(eg, w) else {
            return vec![];
        };
        let root = eg.find(eclass);
        // Split tuples over this MatMul: (tuple class, outputs, sizes).
        let mut tuples: Vec<(Id, u32, Vec<i64>)> = Vec::new();
        for p in eg[root].parents().collect::<Vec<_>>() {
            let class = eg.find(p);
            for node in &eg[class].nodes {
                let ENode::Op {
                    name: "Split",
                    outputs,
                    children,
                } = node
                else {
                    continue;
                };
                if children.len() != 3 || eg.find(children[1]) != root {
                    continue;
                }
                let Some(Op::Split(sp)) = Op::from_attrs("Split", attrs_of(eg, children[0]))
                    .ok()
                    .flatten()
                else {
                    continue;
                };
                let last = sp.axis == -1
                    || eg[root]
                        .data
                        .types
                        .first()
                        .and_then(|t| t.as_tensor())
                        .and_then(|t| t.rank())
                        == Some(sp.axis as usize + 1);
                let sizes = konst(eg, eg.find(children[2])).and_then(|t| t.to_i64_vec());
                if let Some(sizes) = sizes.filter(|v| {
                    last && v.len() == *outputs as usize
                        && v.iter().all(|&e| e >= 0)
                        && v.iter().sum::<i64>() == n as i64
                }) {
                    tuples.push((class, *outputs, sizes));
                }
            }
        }
        let mut changed = Vec::new();
        for (tuple, outputs, sizes) in tuples {
            if !eg
                .analysis
                .applied
                .insert((rule.to_string(), vec![root, tuple]))
            {
                continue;
            }
            let mut from = 0usize;
            for i in 0..outputs {
                let to = from + sizes[i as usize] as usize;
                let get = eg.lookup(ENode::Get {
                    index: i,
                    tuple: [tuple],
                });
                if let (Some(get), Some(wi)) = (get, columns(k, n, &data, from, to)) {
                    let wi = add_const(eg, wi);
                    let mm = add_op(eg, &Op::MatMul(ops::MatMul::default()), &[x, wi]);
                    changed.extend(union_into(eg, get, mm));
                }
                from = to;
            }
        }
        changed
    }
}
