//! Einsum equations: parsing and resolving against input ranks.
//!
//! An equation such as `"...ij,...jk->...ik"` names every axis of every input with a letter (or an ellipsis for
//! a run of leading axes). Resolving it against the input ranks numbers the distinct labels, expands the ellipsis
//! into one label per broadcast axis, and fixes the output labels: the explicit right-hand side, or (implicit
//! form) the ellipsis axes followed by the letters that appear exactly once, in alphabetical order.

use crate::infer::InferError;
use crate::infer_bail;

/// An equation resolved against concrete input ranks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EinsumSpec {
    /// For every input, the label of each of its axes (a label may repeat: a diagonal).
    pub inputs: Vec<Vec<usize>>,
    /// The label of each output axis.
    pub output: Vec<usize>,
    /// The number of distinct labels; labels `0..ellipsis_rank` are the ellipsis axes.
    pub num_labels: usize,
    /// How many axes the ellipsis stands for.
    pub ellipsis_rank: usize,
}

/// One side of a term: letters and at most one ellipsis (`None` in the list).
fn parse_term(term: &str) -> Result<Vec<Option<char>>, InferError> {
    let mut out = Vec::new();
    let mut rest = term.trim();
    let mut seen_ellipsis = false;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("...") {
            if seen_ellipsis {
                infer_bail!("einsum term `{term}` has more than one ellipsis");
            }
            seen_ellipsis = true;
            out.push(None);
            rest = &rest[3..];
        } else if c.is_ascii_alphabetic() {
            out.push(Some(c));
            rest = &rest[1..];
        } else if c.is_whitespace() {
            rest = &rest[c.len_utf8()..];
        } else {
            infer_bail!("einsum term `{term}` has an unexpected character `{c}`");
        }
    }
    Ok(out)
}

/// Parses `equation` and resolves it for inputs of the given ranks.
pub fn resolve(equation: &str, ranks: &[usize]) -> Result<EinsumSpec, InferError> {
    let (lhs, rhs) = match equation.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (equation, None),
    };
    let terms: Vec<Vec<Option<char>>> = lhs.split(',').map(parse_term).collect::<Result<_, _>>()?;
    if terms.len() != ranks.len() {
        infer_bail!(
            "einsum equation `{equation}` has {} input terms but the node has {} inputs",
            terms.len(),
            ranks.len()
        );
    }
    // How many axes the ellipsis covers in each input; the broadcast ellipsis is the longest.
    let mut ellipsis_rank = 0;
    let mut per_input_ellipsis = Vec::with_capacity(terms.len());
    for (t, &r) in terms.iter().zip(ranks) {
        let letters = t.iter().filter(|l| l.is_some()).count();
        let has_ellipsis = t.len() != letters;
        if (!has_ellipsis && letters != r) || (has_ellipsis && letters > r) {
            infer_bail!("einsum term with {letters} letters does not fit an input of rank {r}");
        }
        let e = r - letters;
        per_input_ellipsis.push(e);
        ellipsis_rank = ellipsis_rank.max(e);
    }
    let mut letters: Vec<char> = Vec::new();
    let label_of = |c: char, letters: &mut Vec<char>| match letters.iter().position(|&l| l == c) {
        Some(i) => ellipsis_rank + i,
        None => {
            letters.push(c);
            ellipsis_rank + letters.len() - 1
        }
    };
    let mut inputs = Vec::with_capacity(terms.len());
    let mut counts: Vec<(char, usize)> = Vec::new();
    for (t, &e) in terms.iter().zip(&per_input_ellipsis) {
        let mut labels = Vec::new();
        for l in t {
            match l {
                None => labels.extend(ellipsis_rank - e..ellipsis_rank),
                Some(c) => {
                    labels.push(label_of(*c, &mut letters));
                    match counts.iter_mut().find(|(x, _)| x == c) {
                        Some((_, n)) => *n += 1,
                        None => counts.push((*c, 1)),
                    }
                }
            }
        }
        inputs.push(labels);
    }
    let output = match rhs {
        Some(r) => {
            let mut out = Vec::new();
            for l in parse_term(r)? {
                match l {
                    None => out.extend(0..ellipsis_rank),
                    Some(c) => {
                        let Some(i) = letters.iter().position(|&x| x == c) else {
                            infer_bail!("einsum output letter `{c}` does not appear in any input");
                        };
                        if out.contains(&(ellipsis_rank + i)) {
                            infer_bail!("einsum output letter `{c}` appears twice");
                        }
                        out.push(ellipsis_rank + i);
                    }
                }
            }
            out
        }
        None => {
            let mut once: Vec<char> = counts
                .iter()
                .filter(|(_, n)| *n == 1)
                .map(|(c, _)| *c)
                .collect();
            once.sort_unstable();
            let mut out: Vec<usize> = (0..ellipsis_rank).collect();
            for c in once {
                out.push(label_of(c, &mut letters));
            }
            out
        }
    };
    Ok(EinsumSpec {
        inputs,
        output,
        num_labels: ellipsis_rank + letters.len(),
        ellipsis_rank,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_implicit_and_ellipsis() {
        let s = resolve("ij,jk->ik", &[2, 2]).unwrap();
        assert_eq!(
            (s.inputs, s.output, s.num_labels),
            (vec![vec![0, 1], vec![1, 2]], vec![0, 2], 3)
        );
        let s = resolve("ij,jk", &[2, 2]).unwrap();
        assert_eq!(s.output, vec![0, 2]);
        let s = resolve("ba", &[2]).unwrap();
        assert_eq!(s.output, vec![1, 0]);
        let s = resolve("...ii->...i", &[4]).unwrap();
        assert_eq!(
            (s.inputs, s.output, s.ellipsis_rank),
            (vec![vec![0, 1, 2, 2]], vec![0, 1, 2], 2)
        );
        let s = resolve("i,i", &[1, 1]).unwrap();
        assert_eq!(s.output, Vec::<usize>::new());
    }

    #[test]
    fn bad_equations_are_errors() {
        assert!(resolve("ij->k", &[2]).is_err());
        assert!(resolve("ij", &[3]).is_err());
        assert!(resolve("ij,jk", &[2]).is_err());
        assert!(resolve("i.j", &[2]).is_err());
    }
}
