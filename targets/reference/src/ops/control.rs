//! Control flow (If, Loop, Scan, SequenceMap), sequences, optionals, strings and random ops.
//!
//! The ops with subgraphs run them through [`crate::EvalCx::run_subgraph`], which resolves captures by name in the
//! enclosing scopes and bounds the nesting depth.

use crate::interp::not_yet_evaluated;

mod flow;
mod layout;
mod optional;
mod random;
mod sequence;
mod strings;
mod tfidf;

not_yet_evaluated!(ImageDecoder);

#[cfg(test)]
mod testutil;
