//! Property filters: a small JSON expression language (documented in docs/query.md).
//!
//! ```json
//! {"section": "games"}                                 equality
//! {"installed_size": {"$gte": 100, "$lt": 5000}}       ranges ($gt $gte $lt $lte $eq $ne)
//! {"section": {"$in": ["games", "net"]}}               membership ($in, $nin)
//! {"homepage": {"$exists": true}}
//! {"$and": [..]}, {"$or": [..]}, {"$not": {..}}         several keys in one object mean "and"
//! ```
//! A field name with dots (`a.b`) reaches into nested objects. Comparisons are between numbers
//! or between strings; a missing field or a value of another type does not match (so `$ne` and
//! `$nin` match it).

use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::EngineError;

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Cmp {
        path: Vec<String>,
        op: Op,
        value: Value,
    },
    In {
        path: Vec<String>,
        values: Vec<Value>,
        negate: bool,
    },
    Exists {
        path: Vec<String>,
        exists: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
}

fn err(msg: String) -> EngineError {
    EngineError::Invalid(format!("filter: {msg}"))
}

impl Filter {
    /// Parses a filter from JSON text.
    pub fn parse(text: &str) -> Result<Filter, EngineError> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| err(format!("not valid JSON: {e}")))?;
        Self::from_value(&v)
    }

    pub fn from_value(v: &Value) -> Result<Filter, EngineError> {
        let obj = v
            .as_object()
            .ok_or_else(|| err(format!("expected an object, found `{v}`")))?;
        let mut parts = Vec::with_capacity(obj.len());
        for (key, val) in obj {
            parts.push(match key.as_str() {
                "$and" | "$or" => {
                    let items = val
                        .as_array()
                        .ok_or_else(|| err(format!("`{key}` takes an array of filters")))?;
                    let subs = items
                        .iter()
                        .map(Self::from_value)
                        .collect::<Result<_, _>>()?;
                    if key == "$and" {
                        Filter::And(subs)
                    } else {
                        Filter::Or(subs)
                    }
                }
                "$not" => Filter::Not(Box::new(Self::from_value(val)?)),
                k if k.starts_with('$') => return Err(err(format!("unknown operator `{k}`"))),
                field => Self::field(field, val)?,
            });
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Filter::And(parts)
        })
    }

    fn field(field: &str, val: &Value) -> Result<Filter, EngineError> {
        let path: Vec<String> = field.split('.').map(str::to_owned).collect();
        let ops = match val.as_object() {
            Some(o) if o.keys().any(|k| k.starts_with('$')) => o,
            // A plain value (or an object without operators) is an equality test.
            _ => {
                return Ok(Filter::Cmp {
                    path,
                    op: Op::Eq,
                    value: val.clone(),
                });
            }
        };
        let mut parts = Vec::with_capacity(ops.len());
        for (op, arg) in ops {
            let cmp = |op| Filter::Cmp {
                path: path.clone(),
                op,
                value: arg.clone(),
            };
            parts.push(match op.as_str() {
                "$eq" => cmp(Op::Eq),
                "$ne" => cmp(Op::Ne),
                "$gt" | "$gte" | "$lt" | "$lte" => {
                    if !(arg.is_number() || arg.is_string()) {
                        return Err(err(format!(
                            "`{op}` on `{field}` needs a number or a string, found `{arg}`"
                        )));
                    }
                    cmp(match op.as_str() {
                        "$gt" => Op::Gt,
                        "$gte" => Op::Gte,
                        "$lt" => Op::Lt,
                        _ => Op::Lte,
                    })
                }
                "$in" | "$nin" => Filter::In {
                    path: path.clone(),
                    values: arg
                        .as_array()
                        .ok_or_else(|| err(format!("`{op}` on `{field}` takes an array")))?
                        .clone(),
                    negate: op == "$nin",
                },
                "$exists" => Filter::Exists {
                    path: path.clone(),
                    exists: arg.as_bool().ok_or_else(|| {
                        err(format!("`$exists` on `{field}` takes true or false"))
                    })?,
                },
                other => return Err(err(format!("unknown operator `{other}` on `{field}`"))),
            });
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Filter::And(parts)
        })
    }

    /// Whether an object's properties match.
    pub fn matches(&self, props: &Map<String, Value>) -> bool {
        match self {
            Filter::And(fs) => fs.iter().all(|f| f.matches(props)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches(props)),
            Filter::Not(f) => !f.matches(props),
            Filter::Cmp { path, op, value } => {
                let found = lookup(props, path);
                match op {
                    Op::Eq => found.is_some_and(|v| equal(v, value)),
                    Op::Ne => !found.is_some_and(|v| equal(v, value)),
                    Op::Gt | Op::Gte | Op::Lt | Op::Lte => found
                        .and_then(|v| compare(v, value))
                        .is_some_and(|o| match op {
                            Op::Gt => o == Ordering::Greater,
                            Op::Gte => o != Ordering::Less,
                            Op::Lt => o == Ordering::Less,
                            _ => o != Ordering::Greater,
                        }),
                }
            }
            Filter::In {
                path,
                values,
                negate,
            } => {
                let hit = lookup(props, path).is_some_and(|v| values.iter().any(|x| equal(v, x)));
                hit != *negate
            }
            Filter::Exists { path, exists } => lookup(props, path).is_some() == *exists,
        }
    }
}

fn lookup<'a>(props: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut cur = props.get(first)?;
    for p in rest {
        cur = cur.as_object()?.get(p)?;
    }
    Some(cur)
}

/// Equality with numbers compared by value (so 1 == 1.0).
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn props(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn operators_behave_as_documented() {
        let p = props(json!({"section": "games", "size": 120, "meta": {"arch": "all"}}));
        let yes = [
            json!({"section": "games"}),
            json!({"size": {"$gte": 120, "$lt": 121}}),
            json!({"size": 120.0}),
            json!({"section": {"$in": ["net", "games"]}}),
            json!({"meta.arch": "all"}),
            json!({"missing": {"$ne": 3}}),
            json!({"missing": {"$nin": [3]}}),
            json!({"$or": [{"section": "net"}, {"size": {"$gt": 100}}]}),
            json!({"$not": {"section": "net"}}),
            json!({"meta": {"$exists": true}}),
        ];
        for f in yes {
            assert!(Filter::from_value(&f).expect("parse").matches(&p), "{f}");
        }
        let no = [
            json!({"section": "net"}),
            json!({"size": {"$gt": 120}}),
            json!({"size": {"$gt": "a"}}),
            json!({"missing": 1}),
            json!({"section": "games", "size": 1}),
        ];
        for f in no {
            assert!(!Filter::from_value(&f).expect("parse").matches(&p), "{f}");
        }
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let e = Filter::parse(r#"{"size": {"$gtt": 3}}"#).expect_err("bad op");
        assert!(e.to_string().contains("`$gtt` on `size`"), "{e}");
        let e = Filter::parse(r#"{"$and": 3}"#).expect_err("bad and");
        assert!(e.to_string().contains("`$and` takes an array"), "{e}");
        let e = Filter::parse("[1]").expect_err("not object");
        assert!(e.to_string().contains("expected an object"), "{e}");
        assert!(Filter::parse("{").is_err());
    }
}
