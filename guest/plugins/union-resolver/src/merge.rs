//! The merge, apart from the bindings so it can be tested natively.
//!
//! Versions are ordered by `(hlc, origin, seq)`; "newest" means the highest. Deletes
//! (tombstones) take no part unless every version is one, in which case the answer is a
//! delete. For each property key present in some live version:
//!
//! - if its value is an array in every live version that has the key: the union of those
//!   arrays, sorted (null < booleans < numbers < strings < arrays < objects; numbers by value,
//!   strings by bytes, arrays and objects by their JSON text) with duplicates removed (`1` and
//!   `1.0` are the same value: `1` is kept);
//! - otherwise: the value of the newest live version that has the key.
//!
//! The vector is the newest live version's (none if it has none). The answer depends only on
//! the versions, never on their order in the call, a clock or randomness: every node computes
//! the same object. Keys come out sorted (serde_json's map is a BTreeMap here).

use std::cmp::Ordering;

use serde_json::{Map, Value};

/// One version of the object: `value` is (properties as JSON text, vector), none for a delete.
pub struct Version<'a> {
    pub hlc: u64,
    pub origin: u64,
    pub seq: u64,
    pub value: Option<(&'a str, Option<&'a [f32]>)>,
}

/// The merged object's contents.
#[derive(Debug, PartialEq)]
pub struct Merged {
    /// A JSON object, keys sorted.
    pub properties: String,
    pub vector: Option<Vec<f32>>,
}

/// The merged object, or none when every version is a delete. An error when a version's
/// properties are not a JSON object.
pub fn merge(versions: &[Version]) -> Result<Option<Merged>, String> {
    let mut live: Vec<(&Version, Map<String, Value>)> = Vec::new();
    let mut newest_first: Vec<&Version> = versions.iter().collect();
    newest_first.sort_by_key(|v| std::cmp::Reverse((v.hlc, v.origin, v.seq)));
    for v in newest_first {
        if let Some((text, _)) = v.value {
            let properties = match serde_json::from_str(text) {
                Ok(Value::Object(map)) => map,
                _ => {
                    return Err(format!(
                        "the version {}:{} has properties that are not a JSON object",
                        v.origin, v.seq
                    ))
                }
            };
            live.push((v, properties));
        }
    }
    let Some((newest, _)) = live.first() else {
        return Ok(None);
    };
    let vector = newest
        .value
        .and_then(|(_, vector)| vector)
        .map(<[f32]>::to_vec);

    let mut merged = Map::new();
    for (_, properties) in &live {
        for (key, value) in properties {
            if merged.contains_key(key) {
                continue; // a newer version had it: decided already
            }
            let values: Vec<&Value> = live.iter().filter_map(|(_, p)| p.get(key)).collect();
            let merged_value = if values.iter().all(|v| v.is_array()) {
                let mut union: Vec<Value> = values
                    .iter()
                    .filter_map(|v| v.as_array())
                    .flatten()
                    .cloned()
                    .collect();
                // Equal values end up side by side, the one with the smallest JSON text first
                // (`1` before `1.0`); that one is kept.
                union.sort_by(|a, b| compare(a, b).then_with(|| a.to_string().cmp(&b.to_string())));
                union.dedup_by(|a, b| compare(a, b) == Ordering::Equal);
                Value::Array(union)
            } else {
                value.clone() // the newest version that has the key
            };
            merged.insert(key.clone(), merged_value);
        }
    }
    Ok(Some(Merged {
        properties: Value::Object(merged).to_string(),
        vector,
    }))
}

/// Orders JSON values by type, then by content: booleans false first, numbers by value (`1`
/// equals `1.0`), strings by bytes, arrays and objects by their JSON text. Equal means "the
/// same value": that is what duplicates are.
fn compare(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Number(_) => 2,
            Value::String(_) => 3,
            Value::Array(_) => 4,
            Value::Object(_) => 5,
        }
    }
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Array(_), Value::Array(_)) | (Value::Object(_), Value::Object(_)) => {
            a.to_string().cmp(&b.to_string())
        }
        _ => rank(a).cmp(&rank(b)),
    }
}

/// By value, exactly: first as f64, then (for integers past 2^53, which f64 rounds) as an
/// integer. A lexicographic key, so the order is total, as sorting needs.
fn compare_numbers(x: &serde_json::Number, y: &serde_json::Number) -> Ordering {
    fn key(n: &serde_json::Number) -> (f64, Option<i128>) {
        let f = n.as_f64().unwrap_or(0.0);
        let f = if f == 0.0 { 0.0 } else { f }; // -0.0 is 0
        let integer = n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            // 1.0 is the integer 1 (every such f64 fits an i128 well within range here).
            .or_else(|| (f.fract() == 0.0 && f.abs() < 1e38).then_some(f as i128));
        (f, integer)
    }
    let (kx, ky) = (key(x), key(y));
    kx.0.total_cmp(&ky.0).then(kx.1.cmp(&ky.1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn live<'a>(hlc: u64, origin: u64, properties: &'a str, vector: &'a [f32]) -> Version<'a> {
        Version {
            hlc,
            origin,
            seq: 1,
            value: Some((properties, Some(vector))),
        }
    }

    fn tombstone(hlc: u64, origin: u64) -> Version<'static> {
        Version {
            hlc,
            origin,
            seq: 1,
            value: None,
        }
    }

    fn parse(out: &Merged) -> Value {
        serde_json::from_str(&out.properties).expect("merged properties are JSON")
    }

    #[test]
    fn arrays_are_united_and_the_rest_is_newest() {
        let a = live(
            100,
            1,
            r#"{"tags": ["net", "web"], "name": "old", "n": 1}"#,
            &[1.0],
        );
        let b = live(105, 2, r#"{"tags": ["cli", "net"], "name": "new"}"#, &[2.0]);
        let out = merge(&[a, b]).expect("merges").expect("live");
        assert_eq!(
            parse(&out),
            json!({"tags": ["cli", "net", "web"], "name": "new", "n": 1})
        );
        assert_eq!(out.vector, Some(vec![2.0]));
    }

    #[test]
    fn the_order_of_the_call_does_not_matter() {
        let make = || {
            [
                live(7, 3, r#"{"t": [3, 1], "x": "c"}"#, &[3.0]),
                live(7, 1, r#"{"t": [2, 1.0], "x": "a"}"#, &[1.0]),
                tombstone(9, 2),
                live(5, 9, r#"{"t": ["z", null, true], "x": "b"}"#, &[9.0]),
            ]
        };
        let forward = merge(&make()).expect("merges");
        let mut reversed = make();
        reversed.reverse();
        assert_eq!(forward, merge(&reversed).expect("merges"));
        let out = forward.expect("live");
        // (hlc 7, origin 3) is the newest live version.
        assert_eq!(
            parse(&out),
            json!({"t": [null, true, 1, 2, 3, "z"], "x": "c"})
        );
        assert_eq!(out.vector, Some(vec![3.0]));
    }

    #[test]
    fn equal_hlc_is_decided_by_origin() {
        let a = live(10, 2, r#"{"x": "two"}"#, &[2.0]);
        let b = live(10, 1, r#"{"x": "one"}"#, &[1.0]);
        let out = merge(&[a, b]).expect("merges").expect("live");
        assert_eq!(parse(&out), json!({"x": "two"}));
        assert_eq!(out.vector, Some(vec![2.0]));
    }

    #[test]
    fn a_non_array_anywhere_means_newest_wins() {
        let a = live(1, 1, r#"{"t": ["a"]}"#, &[]);
        let b = live(2, 1, r#"{"t": "b"}"#, &[]);
        let out = merge(&[a, b]).expect("merges").expect("live");
        assert_eq!(parse(&out), json!({"t": "b"}));
    }

    #[test]
    fn tombstones_are_ignored_unless_all_are() {
        let a = live(1, 1, r#"{"t": ["a"]}"#, &[1.0]);
        let out = merge(&[a, tombstone(2, 2)]).expect("merges").expect("live");
        assert_eq!(parse(&out), json!({"t": ["a"]}));
        assert_eq!(merge(&[tombstone(1, 1), tombstone(2, 2)]), Ok(None));
    }

    #[test]
    fn no_vector_on_the_newest_means_none() {
        let a = live(1, 1, "{}", &[1.0]);
        let b = Version {
            hlc: 2,
            origin: 1,
            seq: 2,
            value: Some(("{}", None)),
        };
        let out = merge(&[a, b]).expect("merges").expect("live");
        assert_eq!(out.vector, None);
    }

    #[test]
    fn properties_must_be_objects() {
        assert!(merge(&[live(1, 1, "[1]", &[])]).is_err());
        assert!(merge(&[live(1, 1, "not json", &[])]).is_err());
    }

    #[test]
    fn duplicates_of_every_kind_are_removed() {
        let a = live(1, 1, r#"{"t": [{"b": 1, "a": 2}, [1, 2], "x"]}"#, &[]);
        let b = live(2, 1, r#"{"t": [{"a": 2, "b": 1}, [1, 2], "x", "x"]}"#, &[]);
        let out = merge(&[a, b]).expect("merges").expect("live");
        assert_eq!(parse(&out), json!({"t": ["x", [1, 2], {"a": 2, "b": 1}]}));
    }

    #[test]
    fn large_integers_are_compared_exactly() {
        let a = live(
            1,
            1,
            r#"{"t": [9007199254740993, 9007199254740992.0]}"#,
            &[],
        );
        let b = live(2, 1, r#"{"t": [9007199254740992, -0.0, 0]}"#, &[]);
        let out = merge(&[a, b]).expect("merges").expect("live");
        assert_eq!(
            parse(&out),
            json!({"t": [-0.0, 9007199254740992_u64, 9007199254740993_u64]})
        );
    }
}
