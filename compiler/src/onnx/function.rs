//! Model-local functions (`ModelProto.functions`): a call is replaced by the function's body.
//!
//! A call node whose domain and op type name a function of the model is expanded in place: the function's formal
//! inputs and outputs become the call's actual names, every other name of the body gets a prefix unique to the
//! call, and attributes that refer to the function's attributes (`ref_attr_name`) take the call's value or the
//! function's default (and are left out when neither exists). The expanded nodes are then imported like any other,
//! so calls may nest.

use std::collections::HashMap;

use super::proto::{AttributeProto, FunctionProto, GraphProto, NodeProto};

/// A function's key: (domain, name, overload), the default domain written as `""`.
pub type FunctionKey = (String, String, String);

/// The key a call node refers to.
pub fn call_key(n: &NodeProto) -> FunctionKey {
    (
        normalize_domain(&n.domain),
        n.op_type.clone(),
        n.overload.clone(),
    )
}

/// The key a function defines.
pub fn function_key(f: &FunctionProto) -> FunctionKey {
    (
        normalize_domain(&f.domain),
        f.name.clone(),
        f.overload.clone(),
    )
}

fn normalize_domain(d: &str) -> String {
    if d == "ai.onnx" {
        String::new()
    } else {
        d.to_string()
    }
}

/// The default-domain opset a function body is written against, if it says.
pub fn function_opset(f: &FunctionProto) -> Option<i64> {
    f.opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
}

struct Expander<'f> {
    /// Formal name → actual name.
    map: HashMap<String, String>,
    /// Prefix for the body's own names.
    prefix: String,
    /// The call's attributes by name.
    given: HashMap<&'f str, &'f AttributeProto>,
    /// The function's attribute defaults by name.
    defaults: HashMap<&'f str, &'f AttributeProto>,
}

impl Expander<'_> {
    fn rename(&self, s: &str) -> String {
        if s.is_empty() {
            return String::new();
        }
        match self.map.get(s) {
            Some(a) => a.clone(),
            None => format!("{}{s}", self.prefix),
        }
    }

    /// Resolves `ref_attr_name` references and renames inside subgraph attributes.
    fn attrs(&self, attrs: &[AttributeProto], depth: usize) -> Result<Vec<AttributeProto>, String> {
        let mut out = Vec::with_capacity(attrs.len());
        for a in attrs {
            let mut a = if a.ref_attr_name.is_empty() {
                a.clone()
            } else {
                let source = self
                    .given
                    .get(a.ref_attr_name.as_str())
                    .or_else(|| self.defaults.get(a.ref_attr_name.as_str()));
                match source {
                    Some(v) => AttributeProto {
                        name: a.name.clone(),
                        ..(*v).clone()
                    },
                    None => continue,
                }
            };
            if let Some(g) = &mut a.g {
                self.graph(g, depth + 1)?;
            }
            for g in &mut a.graphs {
                self.graph(g, depth + 1)?;
            }
            out.push(a);
        }
        Ok(out)
    }

    fn node(&self, n: &NodeProto, depth: usize) -> Result<NodeProto, String> {
        let name = if n.name.is_empty() {
            format!("{}{}", self.prefix, n.op_type)
        } else {
            format!("{}{}", self.prefix, n.name)
        };
        Ok(NodeProto {
            name,
            input: n.input.iter().map(|s| self.rename(s)).collect(),
            output: n.output.iter().map(|s| self.rename(s)).collect(),
            attribute: self.attrs(&n.attribute, depth)?,
            ..n.clone()
        })
    }

    fn graph(&self, g: &mut GraphProto, depth: usize) -> Result<(), String> {
        if depth > 64 {
            return Err("subgraphs nest too deeply".into());
        }
        let nodes = g
            .node
            .iter()
            .map(|n| self.node(n, depth))
            .collect::<Result<Vec<_>, _>>()?;
        g.node = nodes;
        for v in g
            .input
            .iter_mut()
            .chain(&mut g.output)
            .chain(&mut g.value_info)
        {
            v.name = self.rename(&v.name);
        }
        for t in &mut g.initializer {
            t.name = self.rename(&t.name);
        }
        Ok(())
    }
}

/// The body of `f` for the call `call`, its own names prefixed with `prefix`.
pub fn expand_call(
    f: &FunctionProto,
    call: &NodeProto,
    prefix: &str,
) -> Result<Vec<NodeProto>, String> {
    if call.input.len() > f.input.len() || call.output.len() > f.output.len() {
        return Err(format!(
            "function `{}` takes {} inputs and gives {} outputs; the call has {} and {}",
            f.name,
            f.input.len(),
            f.output.len(),
            call.input.len(),
            call.output.len()
        ));
    }
    let mut map = HashMap::new();
    for (i, formal) in f.input.iter().enumerate() {
        map.insert(
            formal.clone(),
            call.input.get(i).cloned().unwrap_or_default(),
        );
    }
    for (j, formal) in f.output.iter().enumerate() {
        let actual = call
            .output
            .get(j)
            .filter(|s| !s.is_empty())
            .cloned()
            .unwrap_or_else(|| format!("{prefix}{formal}"));
        map.insert(formal.clone(), actual);
    }
    let e = Expander {
        map,
        prefix: prefix.to_string(),
        given: call
            .attribute
            .iter()
            .map(|a| (a.name.as_str(), a))
            .collect(),
        defaults: f
            .attribute_proto
            .iter()
            .map(|a| (a.name.as_str(), a))
            .collect(),
    };
    f.node.iter().map(|n| e.node(n, 0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attrs,
            ..Default::default()
        }
    }

    #[test]
    fn expands_with_renamed_names_and_attributes() {
        let alpha_ref = AttributeProto {
            name: "alpha".into(),
            ref_attr_name: "a".into(),
            r#type: 1,
            ..Default::default()
        };
        let beta_ref = AttributeProto {
            name: "beta".into(),
            ref_attr_name: "b".into(),
            r#type: 1,
            ..Default::default()
        };
        let f = FunctionProto {
            name: "Act".into(),
            domain: "custom".into(),
            input: vec!["X".into()],
            output: vec!["Y".into()],
            attribute: vec!["a".into(), "b".into()],
            attribute_proto: vec![AttributeProto {
                name: "a".into(),
                f: 0.5,
                r#type: 1,
                ..Default::default()
            }],
            node: vec![
                node("LeakyRelu", &["X"], &["T"], vec![alpha_ref]),
                node("HardSigmoid", &["T"], &["Y"], vec![beta_ref]),
            ],
            ..Default::default()
        };
        let call = NodeProto {
            name: "c".into(),
            domain: "custom".into(),
            ..node("Act", &["x"], &["y"], vec![])
        };
        assert_eq!(call_key(&call), function_key(&f));
        let body = expand_call(&f, &call, "c/").unwrap();
        assert_eq!(body[0].input, vec!["x"]);
        assert_eq!(body[0].output, vec!["c/T"]);
        assert_eq!(body[0].name, "c/LeakyRelu");
        // The default of `a` is used; `b` has neither a value nor a default and is left out.
        assert_eq!(body[0].attribute[0].name, "alpha");
        assert_eq!(body[0].attribute[0].f, 0.5);
        assert!(body[1].attribute.is_empty());
        assert_eq!(body[1].output, vec!["y"]);
        let too_many = node("Act", &["x", "z"], &["y"], vec![]);
        assert!(expand_call(&f, &too_many, "p/").is_err());
    }
}
