//! Qdrant filters translated into the engine's filter language (docs/query.md), which the
//! engine evaluates inside the graph search. Semantics follow Qdrant's: a condition on a key
//! matches when any value the key selects matches (arrays are flattened one level), `except`
//! needs a present, non-null value, a range holds for one value at once, an empty `should` is
//! no constraint, `nested` applies its filter to each object of an array.

use serde_json::{json, Map, Value};

use super::api::ApiError;
use super::ids;

fn bad(msg: impl std::fmt::Display) -> ApiError {
    ApiError::bad(format!("filter: {msg}"))
}

/// The engine expression for a Qdrant `Filter` (`None` for no filter or `null`).
pub fn translate(filter: Option<&Value>) -> Result<Option<Value>, ApiError> {
    match filter {
        None | Some(Value::Null) => Ok(None),
        Some(f) => Ok(Some(filter_expr(f)?)),
    }
}

/// A `Filter` object: `must`, `should`, `must_not`, `min_should`, all optional.
fn filter_expr(f: &Value) -> Result<Value, ApiError> {
    let obj = f
        .as_object()
        .ok_or_else(|| bad(format!("expected a filter object, found `{f}`")))?;
    let mut parts = Vec::new();
    for (key, val) in obj {
        match key.as_str() {
            "must" => parts.push(json!({"$and": conditions(val)?})),
            "must_not" => {
                let conds = conditions(val)?;
                if !conds.is_empty() {
                    parts.push(json!({"$not": {"$or": conds}}));
                }
            }
            "should" => {
                let conds = conditions(val)?;
                if !conds.is_empty() {
                    parts.push(json!({"$or": conds}));
                }
            }
            "min_should" => {
                if val.is_null() {
                    continue;
                }
                let m = val.as_object().ok_or_else(|| {
                    bad("`min_should` takes {\"conditions\": [..], \"min_count\": n}")
                })?;
                let count = m.get("min_count").and_then(Value::as_u64).unwrap_or(0);
                if count < 1 {
                    return Err(bad("`min_should.min_count` must be 1 or larger"));
                }
                if let Some(k) = m.keys().find(|k| *k != "conditions" && *k != "min_count") {
                    return Err(bad(format!("unknown field `{k}` in `min_should`")));
                }
                let conds = conditions(m.get("conditions").unwrap_or(&Value::Null))?;
                parts.push(json!({"$atLeast": {"count": count, "of": conds}}));
            }
            other => {
                return Err(bad(format!(
                    "unknown field `{other}` in a filter (must, should, must_not, min_should)"
                )))
            }
        }
    }
    Ok(json!({"$and": parts}))
}

/// One condition or a list of them (Qdrant accepts both), each translated.
fn conditions(v: &Value) -> Result<Vec<Value>, ApiError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items.iter().map(condition).collect(),
        one => Ok(vec![condition(one)?]),
    }
}

fn condition(c: &Value) -> Result<Value, ApiError> {
    let obj = c
        .as_object()
        .ok_or_else(|| bad(format!("expected a condition object, found `{c}`")))?;
    if obj.contains_key("key") {
        return field_condition(obj);
    }
    if obj.is_empty()
        || obj
            .keys()
            .all(|k| matches!(k.as_str(), "must" | "should" | "must_not" | "min_should"))
    {
        return filter_expr(c);
    }
    let (kind, arg) = single(obj)?;
    match kind {
        "is_empty" | "is_null" => {
            let key = key_of(arg, kind)?;
            Ok(on_key(&key, empty_or_null(kind, true)))
        }
        "has_id" => {
            let list = arg
                .as_array()
                .ok_or_else(|| bad("`has_id` takes a list of point ids"))?;
            Ok(json!({"$id": {"$in": ids::list_to_ours(list)?}}))
        }
        "nested" => {
            let n = arg
                .as_object()
                .ok_or_else(|| bad("`nested` takes {\"key\": .., \"filter\": {..}}"))?;
            let key = n
                .get("key")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("`nested` needs a string `key`"))?;
            let key = key.strip_suffix("[]").unwrap_or(key);
            check_key(key)?;
            let inner = filter_expr(n.get("filter").unwrap_or(&Value::Null))?;
            Ok(on_key(key, json!({"$elemMatch": inner})))
        }
        "has_vector" => Err(ApiError::unsupported("the `has_vector` condition")),
        other => Err(bad(format!(
            "unknown condition `{other}` (field conditions with `key`, is_empty, is_null, has_id, nested, or a filter)"
        ))),
    }
}

/// `is_empty` / `is_null` (or their negation). Qdrant's null is a null value or an array
/// holding a null (one level): the engine's equality with null under its array rule, where
/// `$isNull` would take only a null itself.
fn empty_or_null(kind: &str, want: bool) -> Value {
    match (kind, want) {
        ("is_empty", _) => json!({"$isEmpty": want}),
        (_, true) => json!({"$eq": null}),
        (_, false) => json!({"$ne": null}),
    }
}

/// The only key of a condition object.
fn single(obj: &Map<String, Value>) -> Result<(&str, &Value), ApiError> {
    let mut it = obj.iter();
    match (it.next(), it.next()) {
        (Some((k, v)), None) => Ok((k.as_str(), v)),
        _ => Err(bad(format!(
            "a condition has one kind, found {}",
            obj.keys().cloned().collect::<Vec<_>>().join(", ")
        ))),
    }
}

fn key_of(arg: &Value, kind: &str) -> Result<String, ApiError> {
    let key = arg
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("`{kind}` takes {{\"key\": \"..\"}}")))?;
    check_key(key)?;
    Ok(key.to_owned())
}

/// Keys are dotted paths with `[]` for "each element"; array indexes are not supported.
fn check_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.starts_with('$') {
        return Err(bad(format!(
            "key `{key}` must be a payload path (not empty, not starting with `$`)"
        )));
    }
    if key.split('.').any(|part| {
        let name = part.strip_suffix("[]").unwrap_or(part);
        name.is_empty() || name.contains('[') || name.contains(']')
    }) {
        return Err(ApiError::unsupported(format!(
            "the key `{key}` (array indexes like `a[0]` and empty path segments)"
        )));
    }
    Ok(())
}

fn on_key(key: &str, test: Value) -> Value {
    let mut m = Map::new();
    m.insert(key.to_owned(), test);
    Value::Object(m)
}

/// A `FieldCondition`: `key` and exactly one of match, range, is_empty, is_null.
fn field_condition(obj: &Map<String, Value>) -> Result<Value, ApiError> {
    let key = obj
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("a field condition's `key` must be a string"))?;
    check_key(key)?;
    let mut tests = Vec::new();
    for (name, arg) in obj {
        if arg.is_null() {
            continue;
        }
        tests.push(match name.as_str() {
            "key" => continue,
            "match" => match_test(key, arg)?,
            "range" => range_test(key, arg)?,
            "is_empty" | "is_null" => {
                let want = arg
                    .as_bool()
                    .ok_or_else(|| bad(format!("`{name}` on `{key}` takes true or false")))?;
                empty_or_null(name, want)
            }
            "geo_bounding_box" | "geo_radius" | "geo_polygon" => {
                return Err(ApiError::unsupported(format!("the `{name}` condition")))
            }
            "values_count" => return Err(ApiError::unsupported("the `values_count` condition")),
            other => {
                return Err(bad(format!(
                    "unknown field `{other}` in the condition on `{key}`"
                )))
            }
        });
    }
    match tests.len() {
        1 => Ok(on_key(key, tests.remove(0))),
        0 => Err(bad(format!(
            "the condition on `{key}` names no test (match, range, is_empty or is_null)"
        ))),
        _ => Err(bad(format!(
            "the condition on `{key}` has more than one test; use one condition each"
        ))),
    }
}

fn match_test(key: &str, arg: &Value) -> Result<Value, ApiError> {
    let obj = arg.as_object().ok_or_else(|| {
        bad(format!(
            "`match` on `{key}` takes an object like {{\"value\": ..}}"
        ))
    })?;
    let (kind, v) = single(obj)?;
    let scalar =
        |v: &Value| matches!(v, Value::String(_) | Value::Bool(_)) || v.is_i64() || v.is_u64();
    let list = |v: &Value| -> Result<Vec<Value>, ApiError> {
        let items = v
            .as_array()
            .ok_or_else(|| bad(format!("`match.{kind}` on `{key}` takes a list")))?;
        if let Some(x) = items.iter().find(|x| !scalar(x)) {
            return Err(bad(format!(
                "`match.{kind}` on `{key}`: `{x}` is not a string, integer or boolean"
            )));
        }
        Ok(items.clone())
    };
    let text = |v: &Value| -> Result<String, ApiError> {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| bad(format!("`match.{kind}` on `{key}` takes a string")))
    };
    Ok(match kind {
        "value" => {
            if !scalar(v) {
                return Err(bad(format!(
                    "`match.value` on `{key}`: `{v}` is not a string, integer or boolean"
                )));
            }
            json!({"$eq": v})
        }
        "any" => json!({"$in": list(v)?}),
        "except" => json!({"$except": list(v)?}),
        "text" => json!({"$text": text(v)?}),
        "text_any" => json!({"$textAny": text(v)?}),
        "phrase" => json!({"$phrase": text(v)?}),
        "prefix" => json!({"$prefix": text(v)?}),
        "substring" => json!({"$substring": text(v)?}),
        other => return Err(bad(format!("unknown match kind `{other}` on `{key}`"))),
    })
}

/// `{gt, gte, lt, lte}` of numbers, or of RFC 3339 datetimes (a `DatetimeRange`).
fn range_test(key: &str, arg: &Value) -> Result<Value, ApiError> {
    let obj = arg
        .as_object()
        .ok_or_else(|| bad(format!("`range` on `{key}` takes {{gt, gte, lt, lte}}")))?;
    let dates = obj.values().any(Value::is_string);
    let mut bounds = Map::new();
    for (op, v) in obj {
        if !matches!(op.as_str(), "gt" | "gte" | "lt" | "lte") {
            return Err(bad(format!("unknown bound `{op}` in the range on `{key}`")));
        }
        let bound = match v {
            Value::Null => continue,
            Value::Number(_) if !dates => v.clone(),
            Value::String(s) if dates => json!({"$date": s}),
            other => {
                return Err(bad(format!(
                    "range bound `{op}` on `{key}`: `{other}` (all bounds are numbers, or all are datetimes)"
                )))
            }
        };
        bounds.insert(op.clone(), bound);
    }
    Ok(json!({"$range": bounds}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: Value) -> Value {
        match translate(Some(&v)) {
            Ok(Some(x)) => x,
            other => panic!("{v}: {other:?}"),
        }
    }

    #[test]
    fn translates_each_form() {
        assert_eq!(
            t(json!({"must": [{"key": "a", "match": {"value": "x"}}]})),
            json!({"$and": [{"$and": [{"a": {"$eq": "x"}}]}]})
        );
        assert_eq!(
            t(
                json!({"should": [], "must_not": {"has_id": [1, "6f9619ff8b86d011b42d00cf4fc964ff"]}})
            ),
            json!({"$and": [{"$not": {"$or": [{"$id": {"$in": ["1", "6f9619ff-8b86-d011-b42d-00cf4fc964ff"]}}]}}]})
        );
        assert_eq!(
            t(
                json!({"must": [{"key": "t", "range": {"gte": "2024-01-01T00:00:00Z", "lt": null}}]})
            ),
            json!({"$and": [{"$and": [{"t": {"$range": {"gte": {"$date": "2024-01-01T00:00:00Z"}}}}]}]})
        );
        assert_eq!(
            t(
                json!({"min_should": {"conditions": [{"is_empty": {"key": "a"}}, {"is_null": {"key": "b"}}, {"nested": {"key": "d[]", "filter": {"must": {"key": "x", "match": {"any": [1, 2]}}}}}], "min_count": 1}})
            ),
            json!({"$and": [{"$atLeast": {"count": 1, "of": [
                {"a": {"$isEmpty": true}},
                {"b": {"$eq": null}},
                {"d": {"$elemMatch": {"$and": [{"$and": [{"x": {"$in": [1, 2]}}]}]}}}
            ]}}]})
        );
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        for (f, says) in [
            (
                json!({"must": [{"key": "a", "geo_radius": {}}]}),
                "geo_radius",
            ),
            (
                json!({"must": [{"key": "a[0]", "match": {"value": 1}}]}),
                "a[0]",
            ),
            (
                json!({"must": [{"key": "a", "match": {"value": 1.5}}]}),
                "1.5",
            ),
            (
                json!({"must": [{"key": "a", "range": {"gt": 1, "lt": "2020-01-01"}}]}),
                "all bounds",
            ),
            (json!({"must": [{"key": "a"}]}), "names no test"),
            (json!({"filter": []}), "unknown field `filter`"),
            (
                json!({"min_should": {"conditions": [], "min_count": 0}}),
                "min_count",
            ),
            (json!({"must": [{"has_vector": ""}]}), "has_vector"),
        ] {
            match translate(Some(&f)) {
                Err(e) => assert!(e.message.contains(says), "{f}: {}", e.message),
                Ok(v) => panic!("{f} was accepted as {v:?}"),
            }
        }
    }
}
