//! Qdrant point ids and our string ids, one-to-one:
//!
//! - an unsigned integer `42` is our id `"42"` (canonical decimal: no sign, no leading zeros);
//! - a UUID, hyphenated or as 32 hex digits (`uuid4().hex`), any case, is our id in its
//!   canonical form: lowercase and hyphenated;
//! - any other string (an id made through our own API, like `"pkg:curl"`) is itself: it is
//!   returned as a string, and a client may pass it back.
//!
//! So the id of every object is readable here, and every Qdrant id names exactly one object.

use serde_json::Value;

use super::api::ApiError;

/// Our id for a Qdrant id given as JSON.
pub fn to_ours(v: &Value) -> Result<String, ApiError> {
    match v {
        Value::Number(n) => n.as_u64().map(|n| n.to_string()).ok_or_else(|| {
            ApiError::bad(format!("point id {n} is not an unsigned integer or a UUID"))
        }),
        Value::String(s) => {
            if s.is_empty() {
                return Err(ApiError::bad("a point id may not be an empty string"));
            }
            Ok(canonical_uuid(s).unwrap_or_else(|| s.clone()))
        }
        other => Err(ApiError::bad(format!(
            "point id `{other}` is not an unsigned integer or a UUID"
        ))),
    }
}

/// Our ids for a JSON list of Qdrant ids.
pub fn list_to_ours(v: &[Value]) -> Result<Vec<String>, ApiError> {
    v.iter().map(to_ours).collect()
}

/// The Qdrant form of one of our ids.
pub fn to_qdrant(id: &str) -> Value {
    if is_canonical_u64(id) {
        if let Ok(n) = id.parse::<u64>() {
            return Value::from(n);
        }
    }
    Value::from(id)
}

fn is_canonical_u64(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 20
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'))
}

/// `8-4-4-4-12` lowercase hex for a UUID written hyphenated or as 32 hex digits.
fn canonical_uuid(s: &str) -> Option<String> {
    let hex: String = match s.len() {
        32 => s.to_owned(),
        36 => {
            let b = s.as_bytes();
            if [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
                return None;
            }
            s.chars().filter(|&c| c != '-').collect()
        }
        _ => return None,
    };
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let h = hex.to_ascii_lowercase();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_map_one_to_one() {
        let cases = [
            (json!(42), "42", json!(42)),
            (json!(0), "0", json!(0)),
            (
                json!("6F9619FF-8B86-D011-B42D-00CF4FC964FF"),
                "6f9619ff-8b86-d011-b42d-00cf4fc964ff",
                json!("6f9619ff-8b86-d011-b42d-00cf4fc964ff"),
            ),
            (
                json!("6f9619ff8b86d011b42d00cf4fc964ff"),
                "6f9619ff-8b86-d011-b42d-00cf4fc964ff",
                json!("6f9619ff-8b86-d011-b42d-00cf4fc964ff"),
            ),
            (json!("pkg:curl"), "pkg:curl", json!("pkg:curl")),
            (json!("007"), "007", json!("007")),
        ];
        for (given, ours, back) in cases {
            assert_eq!(to_ours(&given).ok().as_deref(), Some(ours), "{given}");
            assert_eq!(to_qdrant(ours), back, "{ours}");
        }
        assert_eq!(to_qdrant("18446744073709551615"), json!(u64::MAX));
        assert_eq!(
            to_qdrant("18446744073709551616"),
            json!("18446744073709551616")
        );
        for bad in [json!(-1), json!(1.5), json!(""), json!(null), json!([1])] {
            assert!(to_ours(&bad).is_err(), "{bad}");
        }
    }
}
