//! Points as Qdrant sees them: how a collection was created (its vector form, payload index
//! schema, kept as node-local collection metadata), vectors in and out, payload selectors, and
//! the `Record` / `ScoredPoint` shapes.

use serde_json::{json, Map, Value};

use super::api::{ApiError, Cx};
use super::ids;
use crate::model::{CollectionSpec, Metric, Object};

/// A collection as the Qdrant API shows it.
pub struct Form {
    pub spec: CollectionSpec,
    /// Created with the named form `{"": {size, distance}}` (LangChain, LlamaIndex): vectors are
    /// then written and returned as `{"": [..]}`.
    pub named: bool,
    /// What `PUT /collections/{name}` stored: `vectors` as given, `payload_schema`, `hnsw_config`.
    pub meta: Value,
}

impl Form {
    pub fn load(cx: &Cx<'_>, name: &str) -> Result<Form, ApiError> {
        let spec = cx.db.collection_spec(name)?;
        let meta = cx.db.collection_meta(name)?.unwrap_or(Value::Null);
        let named = meta
            .get("vectors")
            .and_then(Value::as_object)
            .is_some_and(|v| v.contains_key(""));
        Ok(Form { spec, named, meta })
    }

    /// A vector from a request: a list of numbers, or `{"": [..]}`. Cosine collections store
    /// the vector normalised, as Qdrant does.
    pub fn vector_in(&self, v: &Value, what: &str) -> Result<Vec<f32>, ApiError> {
        let list = match v {
            Value::Array(_) => v,
            Value::Object(m) => named_vector(m, what)?,
            other => {
                return Err(ApiError::bad(format!(
                    "{what}: `{}` is not a vector (a list of numbers)",
                    short(other)
                )))
            }
        };
        let mut out = numbers(list, what)?;
        if out.len() != self.spec.dimension as usize {
            return Err(ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                format!(
                    "Wrong input: Vector dimension error: expected dim: {}, got {} ({what})",
                    self.spec.dimension,
                    out.len()
                ),
            ));
        }
        if self.spec.metric == Metric::Cosine {
            normalise(&mut out);
        }
        Ok(out)
    }

    /// A stored vector in the form the collection was created with.
    pub fn vector_out(&self, v: &[f32]) -> Value {
        let list = Value::from(v.iter().map(|x| f64::from(*x)).collect::<Vec<_>>());
        if self.named {
            json!({ "": list })
        } else {
            list
        }
    }

    /// A `Record` for an object.
    pub fn record(&self, o: &Object, sel: &Selection) -> Value {
        json!({
            "id": ids::to_qdrant(&o.id),
            "payload": sel.payload(&o.properties),
            "vector": if sel.vector { o.vector.as_deref().map(|v| self.vector_out(v)) } else { None },
        })
    }

    /// A `ScoredPoint` for a hit; `o` is the object when payload or vector was asked for.
    pub fn scored(&self, id: &str, score: f32, o: Option<&Object>, sel: &Selection) -> Value {
        json!({
            "id": ids::to_qdrant(id),
            "version": o.map_or(0, |o| o.version.seq),
            "score": score,
            "payload": o.and_then(|o| sel.payload(&o.properties)),
            "vector": match o { Some(o) if sel.vector => o.vector.as_deref().map(|v| self.vector_out(v)), _ => None },
        })
    }
}

fn named_vector<'a>(m: &'a Map<String, Value>, what: &str) -> Result<&'a Value, ApiError> {
    if m.contains_key("indices") || m.contains_key("values") {
        return Err(ApiError::unsupported(format!("a sparse vector ({what})")));
    }
    if m.contains_key("text") || m.contains_key("image") || m.contains_key("model") {
        return Err(ApiError::unsupported(format!("inference objects ({what})")));
    }
    let mut it = m.iter();
    match (it.next(), it.next()) {
        (Some((name, v)), None) if name.is_empty() => match v {
            Value::Object(_) => Err(ApiError::unsupported(format!("a sparse vector ({what})"))),
            v => Ok(v),
        },
        (None, _) => Err(ApiError::bad(format!("{what}: no vector given"))),
        _ => Err(ApiError::unsupported(format!(
            "named vectors other than the unnamed `\"\"` ({what}: {})",
            m.keys()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn numbers(list: &Value, what: &str) -> Result<Vec<f32>, ApiError> {
    let items = list
        .as_array()
        .ok_or_else(|| ApiError::bad(format!("{what}: a vector is a list of numbers")))?;
    if items.first().is_some_and(Value::is_array) {
        return Err(ApiError::unsupported(format!("multivectors ({what})")));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, x)| {
            x.as_f64().map(|f| f as f32).ok_or_else(|| {
                ApiError::bad(format!(
                    "{what}: element {i} of the vector is `{}`, not a number",
                    short(x)
                ))
            })
        })
        .collect()
}

fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > f32::EPSILON {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// At most 60 characters of a JSON value, for error messages.
pub fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// What a read returns of each point: `with_payload` and `with_vector`.
pub struct Selection {
    payload: PayloadSel,
    pub vector: bool,
}

enum PayloadSel {
    None,
    All,
    Include(Vec<Vec<Part>>),
    Exclude(Vec<Vec<Part>>),
}

/// One step of a payload selector's key: `a.b[].c` is `a`, `b`, `[]`, `c`.
#[derive(PartialEq)]
pub enum Part {
    Key(String),
    Each,
}

/// A selector key as parts; array indexes (`a[0]`) are not supported.
pub fn parse_key(key: &str, what: &str) -> Result<Vec<Part>, ApiError> {
    let mut parts = Vec::new();
    for seg in key.split('.') {
        let mut name = seg;
        let mut each = 0;
        while let Some(n) = name.strip_suffix("[]") {
            name = n;
            each += 1;
        }
        if name.is_empty() || name.contains('[') || name.contains(']') {
            return Err(ApiError::unsupported(format!(
                "the payload key `{key}` in `{what}` (array indexes like `a[0]` and empty path segments)"
            )));
        }
        parts.push(Part::Key(name.to_owned()));
        parts.extend(std::iter::repeat_with(|| Part::Each).take(each));
    }
    Ok(parts)
}

impl Selection {
    /// From `with_payload` (true, false, a list of keys, `{include}` or `{exclude}`) and
    /// `with_vector` (true, false, or a list of names), with the endpoint's defaults.
    pub fn parse(
        with_payload: Option<&Value>,
        with_vector: Option<&Value>,
        payload_default: bool,
    ) -> Result<Selection, ApiError> {
        let keys = |v: &Value, what: &str| -> Result<Vec<Vec<Part>>, ApiError> {
            let list: Vec<&str> = v
                .as_array()
                .and_then(|a| a.iter().map(Value::as_str).collect())
                .ok_or_else(|| ApiError::bad(format!("`{what}` takes a list of payload keys")))?;
            list.into_iter().map(|k| parse_key(k, what)).collect()
        };
        let payload = match with_payload {
            None | Some(Value::Null) => {
                if payload_default {
                    PayloadSel::All
                } else {
                    PayloadSel::None
                }
            }
            Some(Value::Bool(true)) => PayloadSel::All,
            Some(Value::Bool(false)) => PayloadSel::None,
            Some(v @ Value::Array(_)) => PayloadSel::Include(keys(v, "with_payload")?),
            Some(Value::Object(m)) => match (m.get("include"), m.get("exclude")) {
                (Some(i), None) => PayloadSel::Include(keys(i, "with_payload.include")?),
                (None, Some(e)) => PayloadSel::Exclude(keys(e, "with_payload.exclude")?),
                _ => {
                    return Err(ApiError::bad(
                        "`with_payload` takes true, false, a list of keys, {\"include\": [..]} or {\"exclude\": [..]}",
                    ))
                }
            },
            Some(other) => {
                return Err(ApiError::bad(format!(
                    "`with_payload`: `{}` is not true, false or a list of keys",
                    short(other)
                )))
            }
        };
        let vector = match with_vector {
            None | Some(Value::Null) | Some(Value::Bool(false)) => false,
            Some(Value::Bool(true)) => true,
            Some(Value::Array(names)) => {
                if let Some(n) = names.iter().find(|n| n.as_str() != Some("")) {
                    return Err(ApiError::unsupported(format!(
                        "named vectors other than `\"\"` (with_vector: {n})"
                    )));
                }
                !names.is_empty()
            }
            Some(other) => {
                return Err(ApiError::bad(format!(
                    "`with_vector`: `{}` is not true, false or a list of names",
                    short(other)
                )))
            }
        };
        Ok(Selection { payload, vector })
    }

    /// Whether points must be read at all (besides their ids).
    pub fn needs_object(&self) -> bool {
        self.vector || !matches!(self.payload, PayloadSel::None)
    }

    fn payload(&self, props: &Value) -> Option<Value> {
        let empty = Value::Object(Map::new());
        let all = if props.is_object() { props } else { &empty };
        match &self.payload {
            PayloadSel::None => None,
            PayloadSel::All => Some(all.clone()),
            PayloadSel::Include(keys) => {
                let paths: Vec<&[Part]> = keys.iter().map(Vec::as_slice).collect();
                Some(include(all, &paths))
            }
            PayloadSel::Exclude(keys) => {
                let paths: Vec<&[Part]> = keys.iter().map(Vec::as_slice).collect();
                Some(exclude(all, &paths))
            }
        }
    }
}

/// The rests of the paths that start with `first`.
fn after<'a>(paths: &[&'a [Part]], first: &Part) -> Vec<&'a [Part]> {
    paths
        .iter()
        .filter_map(|p| p.split_first())
        .filter(|(head, _)| *head == first)
        .map(|(_, rest)| rest)
        .collect()
}

/// What Qdrant's `include` keeps of a value: the keys on a path, whole below a path's end;
/// arrays only through `[]` (empty otherwise); a scalar where a path goes on, as it is.
fn include(v: &Value, paths: &[&[Part]]) -> Value {
    if paths.iter().any(|p| p.is_empty()) {
        return v.clone();
    }
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter_map(|(k, x)| {
                    let rest = after(paths, &Part::Key(k.clone()));
                    (!rest.is_empty()).then(|| (k.clone(), include(x, &rest)))
                })
                .collect(),
        ),
        Value::Array(items) => {
            let rest = after(paths, &Part::Each);
            if rest.is_empty() {
                Value::Array(Vec::new())
            } else {
                Value::Array(items.iter().map(|x| include(x, &rest)).collect())
            }
        }
        other => other.clone(),
    }
}

/// What Qdrant's `exclude` keeps of a value: all but what the paths end at (an array through
/// `[]` ending there is emptied).
pub fn exclude(v: &Value, paths: &[&[Part]]) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter_map(|(k, x)| {
                    let kept = exclude_below(x, &after(paths, &Part::Key(k.clone())))?;
                    Some((k.clone(), kept))
                })
                .collect(),
        ),
        Value::Array(items) => {
            let rest = after(paths, &Part::Each);
            match exclude_below(v, &rest) {
                None => Value::Array(Vec::new()),
                Some(_) if rest.is_empty() => v.clone(),
                Some(_) => Value::Array(items.iter().map(|x| exclude(x, &rest)).collect()),
            }
        }
        other => other.clone(),
    }
}

/// `None` when a path ends here (the value goes), else what is kept of it.
fn exclude_below(v: &Value, rest: &[&[Part]]) -> Option<Value> {
    if rest.is_empty() {
        Some(v.clone())
    } else if rest.iter().any(|p| p.is_empty()) {
        None
    } else {
        Some(exclude(v, rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_selectors_pick_and_drop_keys() -> Result<(), ApiError> {
        let props = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]});
        let sel = |p: Value| Selection::parse(Some(&p), None, true);
        assert_eq!(sel(json!(true))?.payload(&props), Some(props.clone()));
        assert_eq!(sel(json!(false))?.payload(&props), None);
        assert_eq!(
            sel(json!(["a", "b.c"]))?.payload(&props),
            Some(json!({"a": 1, "b": {"c": 2}}))
        );
        assert_eq!(
            sel(json!({"exclude": ["b.d", "e"]}))?.payload(&props),
            Some(json!({"a": 1, "b": {"c": 2}}))
        );
        // as Qdrant: a scalar or null where a path goes on is kept; arrays only through `[]`
        let props = json!({"o": null, "n": 5, "arr": [{"k": 1, "v": 2}, {"k": 3}], "l": [1, 2]});
        assert_eq!(
            sel(json!(["o.a", "n.b", "arr[].k", "l.x"]))?.payload(&props),
            Some(json!({"o": null, "n": 5, "arr": [{"k": 1}, {"k": 3}], "l": []}))
        );
        assert_eq!(
            sel(json!({"exclude": ["arr[].k", "l[]", "o.a"]}))?.payload(&props),
            Some(json!({"o": null, "n": 5, "arr": [{"v": 2}, {}], "l": []}))
        );
        assert!(sel(json!(["a[0]"])).is_err());
        assert!(sel(json!(3)).is_err());
        assert!(Selection::parse(None, Some(&json!(["dense"])), true).is_err());
        Ok(())
    }
}
