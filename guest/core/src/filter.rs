//! Property filters: a small JSON expression language (documented in docs/query.md).
//!
//! ```json
//! {"section": "games"}                                 equality
//! {"installed_size": {"$gte": 100, "$lt": 5000}}       ranges ($gt $gte $lt $lte $eq $ne)
//! {"at": {"$gte": {"$date": "2023-02-08T10:49:00Z"}}}  datetime ranges
//! {"section": {"$in": ["games", "net"]}}               membership ($in, $nin)
//! {"homepage": {"$exists": true}}                      also $isEmpty, $isNull
//! {"title": {"$text": "rust"}}                         whole words ($textAny, $phrase)
//! {"title": {"$prefix": "ru"}}                         also $substring
//! {"n": {"$range": {"gt": 1, "lte": 9}}}               every bound holds for one value
//! {"tags": {"$except": ["a"]}}                         a present value not in the list
//! {"tags": {"$elemMatch": {"k": "a", "v": 1}}}         one array element matches it all
//! {"$id": {"$in": ["a", "b"]}}                         the object's id ($eq $ne $in $nin, ranges)
//! {"$and": [..]}, {"$or": [..]}, {"$not": {..}}         several keys in one object mean "and"
//! {"$atLeast": {"count": 2, "of": [..]}}
//! ```
//! A field name with dots (`a.b`) reaches into nested objects; `a[]` means the elements of the
//! array `a`, `a[2]` its third element (a key does not reach through an array: write `a[].b`,
//! as in Qdrant). A path therefore yields a list of values. A
//! comparison matches when any yielded value matches, or is an array with an element that
//! matches (MongoDB's array rule). Comparisons are between numbers or between strings; a missing
//! field or a value of another type does not match (so `$ne` and `$nin`, their negations, match
//! it).

use std::cmp::Ordering;
use std::collections::BTreeSet;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use serde_json::{Map, Value};

use crate::{id_order, EngineError};

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    /// At least `count` of the filters match.
    AtLeast {
        count: usize,
        of: Vec<Filter>,
    },
    /// A test on the values a path yields.
    Field {
        path: Vec<Seg>,
        test: Test,
    },
    /// A test on the object's id.
    Id(IdTest),
}

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A key of an object (of each object, on an array of objects).
    Key(String),
    /// `[]`: each element of an array.
    Each,
    /// `[n]`: element `n` of an array.
    Index(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    /// `$eq $ne $gt $gte $lt $lte` with a JSON value.
    Cmp {
        op: Op,
        value: Value,
    },
    /// A range against `{"$date": ..}`: stored strings read as datetimes.
    Date {
        op: Op,
        at: DateTime<Utc>,
    },
    In {
        values: Vec<Value>,
        negate: bool,
    },
    Exists(bool),
    IsEmpty(bool),
    IsNull(bool),
    /// Word tests on strings (Qdrant's `match.text`, `text_any`, `phrase`), or byte tests.
    Words {
        kind: Words,
        query: String,
    },
    /// `$range`: every bound holds for one value (numbers, or datetimes).
    Range(Vec<(Op, Bound)>),
    /// `$except`: some value is present, not null, and none of these.
    Except(Vec<Value>),
    ElemMatch(Box<Filter>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Words {
    /// Every word of the query is a word of the value (words: lowercase runs of letters and
    /// digits).
    All,
    /// Some word of the query is a word of the value.
    Any,
    /// The query's words appear in a row.
    Phrase,
    Prefix,
    Substring,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Bound {
    Number(Value),
    Date(DateTime<Utc>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum IdTest {
    /// Equality, inequality, or a range in id order ([`crate::id_order`]).
    Cmp {
        op: Op,
        id: String,
    },
    In {
        ids: BTreeSet<String>,
        negate: bool,
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

impl Op {
    fn holds(self, o: Ordering) -> bool {
        match self {
            Op::Eq => o == Ordering::Equal,
            Op::Ne => o != Ordering::Equal,
            Op::Gt => o == Ordering::Greater,
            Op::Gte => o != Ordering::Less,
            Op::Lt => o == Ordering::Less,
            Op::Lte => o != Ordering::Greater,
        }
    }

    fn of(name: &str) -> Option<Op> {
        Some(match name {
            "$eq" => Op::Eq,
            "$ne" => Op::Ne,
            "$gt" => Op::Gt,
            "$gte" => Op::Gte,
            "$lt" => Op::Lt,
            "$lte" => Op::Lte,
            _ => return None,
        })
    }
}

fn err(msg: String) -> EngineError {
    EngineError::Invalid(format!("filter: {msg}"))
}

/// Where a filter is being read: `$id` has no meaning inside `$elemMatch`.
#[derive(Clone, Copy)]
struct Ctx {
    in_elem: bool,
}

fn one_or_and(mut parts: Vec<Filter>) -> Filter {
    if parts.len() == 1 {
        parts.remove(0)
    } else {
        Filter::And(parts)
    }
}

impl Filter {
    /// Parses a filter from JSON text.
    pub fn parse(text: &str) -> Result<Filter, EngineError> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| err(format!("not valid JSON: {e}")))?;
        Self::from_value(&v)
    }

    pub fn from_value(v: &Value) -> Result<Filter, EngineError> {
        Self::read(v, Ctx { in_elem: false })
    }

    fn read(v: &Value, ctx: Ctx) -> Result<Filter, EngineError> {
        let obj = v
            .as_object()
            .ok_or_else(|| err(format!("expected an object, found `{v}`")))?;
        let mut parts = Vec::with_capacity(obj.len());
        for (key, val) in obj {
            parts.push(match key.as_str() {
                "$and" | "$or" => {
                    let subs = Self::list(key, val, ctx)?;
                    if key == "$and" {
                        Filter::And(subs)
                    } else {
                        Filter::Or(subs)
                    }
                }
                "$not" => Filter::Not(Box::new(Self::read(val, ctx)?)),
                "$atLeast" => Self::at_least(val, ctx)?,
                "$id" if ctx.in_elem => {
                    return Err(err("`$id` cannot be used inside `$elemMatch`".into()))
                }
                "$id" => Filter::Id(id_test(val)?),
                k if k.starts_with('$') => return Err(err(format!("unknown operator `{k}`"))),
                field => Self::field(field, val)?,
            });
        }
        Ok(one_or_and(parts))
    }

    fn list(key: &str, val: &Value, ctx: Ctx) -> Result<Vec<Filter>, EngineError> {
        val.as_array()
            .ok_or_else(|| err(format!("`{key}` takes an array of filters")))?
            .iter()
            .map(|f| Self::read(f, ctx))
            .collect()
    }

    fn at_least(val: &Value, ctx: Ctx) -> Result<Filter, EngineError> {
        let usage = || err("`$atLeast` takes {\"count\": n, \"of\": [filters]}".into());
        let obj = val.as_object().ok_or_else(usage)?;
        if let Some(k) = obj.keys().find(|k| *k != "count" && *k != "of") {
            return Err(err(format!(
                "`$atLeast` has an unknown key `{k}` (it takes `count` and `of`)"
            )));
        }
        let count = obj
            .get("count")
            .and_then(Value::as_u64)
            .ok_or_else(|| err("`$atLeast` needs `count`, a whole number >= 0".into()))?;
        let of = Self::list("$atLeast.of", obj.get("of").ok_or_else(usage)?, ctx)?;
        Ok(Filter::AtLeast {
            count: usize::try_from(count).unwrap_or(usize::MAX),
            of,
        })
    }

    fn field(field: &str, val: &Value) -> Result<Filter, EngineError> {
        let path = parse_path(field)?;
        let with = |test| Filter::Field {
            path: path.clone(),
            test,
        };
        let ops = match val.as_object() {
            Some(o) if o.keys().any(|k| k.starts_with('$')) => o,
            // A plain value (or an object without operators) is an equality test.
            _ => {
                return Ok(with(Test::Cmp {
                    op: Op::Eq,
                    value: val.clone(),
                }))
            }
        };
        let flag = |op: &str, arg: &Value| {
            arg.as_bool()
                .ok_or_else(|| err(format!("`{op}` on `{field}` takes true or false")))
        };
        let mut parts = Vec::with_capacity(ops.len());
        for (op, arg) in ops {
            let test = match op.as_str() {
                "$eq" | "$ne" => Test::Cmp {
                    op: Op::of(op).unwrap_or(Op::Eq),
                    value: arg.clone(),
                },
                "$gt" | "$gte" | "$lt" | "$lte" => {
                    let op_ = Op::of(op).unwrap_or(Op::Eq);
                    match arg {
                        Value::Number(_) | Value::String(_) => Test::Cmp {
                            op: op_,
                            value: arg.clone(),
                        },
                        Value::Object(o) if o.len() == 1 && o.contains_key("$date") => {
                            let text = o["$date"].as_str().ok_or_else(|| {
                                err(format!(
                                    "`$date` in `{op}` on `{field}` takes a string, found `{}`",
                                    o["$date"]
                                ))
                            })?;
                            let at = parse_datetime(text).ok_or_else(|| {
                                err(format!(
                                    "`$date` in `{op}` on `{field}`: `{text}` is not a datetime (RFC 3339, e.g. 2023-02-08T10:49:00Z, or 2023-02-08)"
                                ))
                            })?;
                            Test::Date { op: op_, at }
                        }
                        _ => {
                            return Err(err(format!(
                                "`{op}` on `{field}` needs a number, a string or {{\"$date\": ..}}, found `{arg}`"
                            )))
                        }
                    }
                }
                "$in" | "$nin" => Test::In {
                    values: arg
                        .as_array()
                        .ok_or_else(|| err(format!("`{op}` on `{field}` takes an array")))?
                        .clone(),
                    negate: op == "$nin",
                },
                "$exists" => Test::Exists(flag(op, arg)?),
                "$isEmpty" => Test::IsEmpty(flag(op, arg)?),
                "$isNull" => Test::IsNull(flag(op, arg)?),
                "$text" | "$textAny" | "$phrase" | "$prefix" | "$substring" => Test::Words {
                    kind: match op.as_str() {
                        "$text" => Words::All,
                        "$textAny" => Words::Any,
                        "$phrase" => Words::Phrase,
                        "$prefix" => Words::Prefix,
                        _ => Words::Substring,
                    },
                    query: arg
                        .as_str()
                        .ok_or_else(|| {
                            err(format!("`{op}` on `{field}` takes a string, found `{arg}`"))
                        })?
                        .to_owned(),
                },
                "$range" => Test::Range(range_bounds(field, arg)?),
                "$except" => Test::Except(
                    arg.as_array()
                        .ok_or_else(|| err(format!("`$except` on `{field}` takes an array")))?
                        .clone(),
                ),
                "$elemMatch" => {
                    if !arg.is_object() {
                        return Err(err(format!(
                            "`$elemMatch` on `{field}` takes a filter object, found `{arg}`"
                        )));
                    }
                    Test::ElemMatch(Box::new(Self::read(arg, Ctx { in_elem: true })?))
                }
                other => return Err(err(format!("unknown operator `{other}` on `{field}`"))),
            };
            parts.push(with(test));
        }
        Ok(one_or_and(parts))
    }

    /// Whether the object `id` with these properties matches.
    pub fn matches(&self, id: &str, props: &Map<String, Value>) -> bool {
        match self {
            Filter::And(fs) => fs.iter().all(|f| f.matches(id, props)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches(id, props)),
            Filter::Not(f) => !f.matches(id, props),
            Filter::AtLeast { count, of } => {
                *count == 0
                    || of
                        .iter()
                        .filter(|f| f.matches(id, props))
                        .take(*count)
                        .count()
                        == *count
            }
            Filter::Field { path, test } => test.holds(props, path, id),
            Filter::Id(t) => t.holds(id),
        }
    }
}

impl Test {
    fn holds(&self, props: &Map<String, Value>, path: &[Seg], id: &str) -> bool {
        let any = |pred: &mut dyn FnMut(&Value) -> bool| any_found(props, path, pred);
        match self {
            Test::Cmp { op: Op::Eq, value } => any(&mut flat(|v| equal(v, value))),
            Test::Cmp { op: Op::Ne, value } => !any(&mut flat(|v| equal(v, value))),
            Test::Cmp { op, value } => any(&mut flat(|v| {
                compare(v, value).is_some_and(|o| op.holds(o))
            })),
            Test::Date { op, at } => any(&mut flat(|v| {
                v.as_str()
                    .and_then(parse_datetime)
                    .is_some_and(|t| op.holds(t.cmp(at)))
            })),
            Test::In { values, negate } => {
                any(&mut flat(|v| values.iter().any(|x| equal(v, x)))) != *negate
            }
            Test::Exists(want) => any(&mut |_| true) == *want,
            // Empty: every value found (none at all, too) is null or `[]`.
            Test::IsEmpty(want) => any(&mut |v| !is_empty(v)) != *want,
            // Null: a null value, or an array with a null element.
            Test::IsNull(want) => {
                any(&mut |v| {
                    v.is_null() || v.as_array().is_some_and(|a| a.iter().any(Value::is_null))
                }) == *want
            }
            Test::Words { kind, query } => any(&mut each(|v| {
                v.as_str().is_some_and(|s| words_match(*kind, query, s))
            })),
            Test::Range(bounds) => any(&mut each(|v| {
                bounds.iter().all(|(op, b)| match b {
                    Bound::Number(n) => v.is_number() && compare(v, n).is_some_and(|o| op.holds(o)),
                    Bound::Date(at) => v
                        .as_str()
                        .and_then(parse_datetime)
                        .is_some_and(|t| op.holds(t.cmp(at))),
                })
            })),
            Test::Except(values) => any(&mut each(|v| {
                !v.is_null() && !values.iter().any(|x| equal(v, x))
            })),
            // Only objects inside an array are tested (Qdrant's `nested`).
            Test::ElemMatch(sub) => any(&mut |v| {
                v.as_array().is_some_and(|items| {
                    items
                        .iter()
                        .any(|x| x.as_object().is_some_and(|o| sub.matches(id, o)))
                })
            }),
        }
    }
}

impl IdTest {
    fn holds(&self, id: &str) -> bool {
        match self {
            IdTest::Cmp { op, id: other } => op.holds(id_order(id, other)),
            IdTest::In { ids, negate } => ids.contains(id) != *negate,
        }
    }
}

/// `$id`'s argument: an id, or operators over ids.
fn id_test(val: &Value) -> Result<IdTest, EngineError> {
    let Some(ops) = val.as_object() else {
        return Ok(IdTest::Cmp {
            op: Op::Eq,
            id: id_of("$eq", val)?,
        });
    };
    let mut tests = Vec::with_capacity(ops.len());
    for (op, arg) in ops {
        tests.push(match op.as_str() {
            "$in" | "$nin" => IdTest::In {
                ids: arg
                    .as_array()
                    .ok_or_else(|| err(format!("`{op}` on `$id` takes an array of ids")))?
                    .iter()
                    .map(|x| id_of(op, x))
                    .collect::<Result<_, _>>()?,
                negate: op == "$nin",
            },
            name => match Op::of(name) {
                Some(o) => IdTest::Cmp {
                    op: o,
                    id: id_of(name, arg)?,
                },
                None => return Err(err(format!("unknown operator `{name}` on `$id`"))),
            },
        });
    }
    match tests.len() {
        1 => Ok(tests.remove(0)),
        _ => Err(err(
            "`$id` takes one operator; combine several with `$and`".into()
        )),
    }
}

/// An id as a filter names it: a string, or a whole number >= 0 (its decimal text).
fn id_of(op: &str, v: &Value) -> Result<String, EngineError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) if n.as_u64().is_some() => Ok(n.to_string()),
        _ => Err(err(format!(
            "`{op}` on `$id` takes ids (strings or whole numbers >= 0), found `{v}`"
        ))),
    }
}

/// `a.b[].c[0]` → `Key(a) Key(b) Each Key(c) Index(0)`.
fn parse_path(field: &str) -> Result<Vec<Seg>, EngineError> {
    let bad = |why: &str| err(format!("bad field path `{field}`: {why}"));
    let mut segs = Vec::new();
    for part in field.split('.') {
        let (name, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
        if name.is_empty() && !rest.is_empty() {
            return Err(bad("`[` must follow a field name"));
        }
        segs.push(Seg::Key(name.to_owned()));
        while !rest.is_empty() {
            let close = rest.find(']').ok_or_else(|| bad("`[` without `]`"))?;
            let inner = &rest[1..close];
            segs.push(if inner.is_empty() {
                Seg::Each
            } else {
                Seg::Index(
                    inner
                        .parse()
                        .ok()
                        .filter(|_| inner.bytes().all(|b| b.is_ascii_digit()))
                        .ok_or_else(|| bad("only `[]` and `[n]` may follow a name"))?,
                )
            });
            rest = &rest[close + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return Err(bad("`]` must end the segment or be followed by `[`"));
            }
        }
    }
    Ok(segs)
}

/// Whether `pred` holds for some value the path yields (stops at the first).
fn any_found(
    props: &Map<String, Value>,
    path: &[Seg],
    pred: &mut dyn FnMut(&Value) -> bool,
) -> bool {
    match path.split_first() {
        Some((Seg::Key(k), rest)) => props.get(k).is_some_and(|v| any_at(v, rest, pred)),
        // parse_path always starts with a key.
        _ => false,
    }
}

fn any_at(v: &Value, path: &[Seg], pred: &mut dyn FnMut(&Value) -> bool) -> bool {
    let Some((seg, rest)) = path.split_first() else {
        return pred(v);
    };
    match (seg, v) {
        (Seg::Key(k), Value::Object(o)) => o.get(k).is_some_and(|x| any_at(x, rest, pred)),
        (Seg::Each, Value::Array(items)) => items.iter().any(|x| any_at(x, rest, pred)),
        (Seg::Index(i), Value::Array(items)) => {
            items.get(*i).is_some_and(|x| any_at(x, rest, pred))
        }
        _ => false,
    }
}

/// The array rule: a test holds for a value, or for some element of an array value.
fn flat(mut pred: impl FnMut(&Value) -> bool) -> impl FnMut(&Value) -> bool {
    move |v| {
        pred(v)
            || v.as_array()
                .is_some_and(|items| items.iter().any(&mut pred))
    }
}

/// Qdrant's flattening: a test holds for a value, or, when the value is an array, for one of its
/// elements (the array itself is not a value then).
fn each(mut pred: impl FnMut(&Value) -> bool) -> impl FnMut(&Value) -> bool {
    move |v| match v.as_array() {
        Some(items) => items.iter().any(&mut pred),
        None => pred(v),
    }
}

/// Lowercase runs of letters and digits (Qdrant's default word tokenizer).
fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn words_match(kind: Words, query: &str, value: &str) -> bool {
    match kind {
        Words::Prefix => value.starts_with(query),
        Words::Substring => value.contains(query),
        Words::All | Words::Any | Words::Phrase => {
            let q = words(query);
            let v = words(value);
            match kind {
                Words::All => !q.is_empty() && q.iter().all(|w| v.contains(w)),
                Words::Any => q.iter().any(|w| v.contains(w)),
                _ => !q.is_empty() && v.windows(q.len()).any(|win| win == q.as_slice()),
            }
        }
    }
}

/// `$range`'s bounds: `{gt, gte, lt, lte}`, numbers or `{"$date": ..}`.
fn range_bounds(field: &str, arg: &Value) -> Result<Vec<(Op, Bound)>, EngineError> {
    let obj = arg.as_object().ok_or_else(|| {
        err(format!(
            "`$range` on `{field}` takes {{\"gt\", \"gte\", \"lt\", \"lte\"}}"
        ))
    })?;
    let mut out = Vec::with_capacity(obj.len());
    for (k, v) in obj {
        let op = match k.as_str() {
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            other => {
                return Err(err(format!(
                    "`$range` on `{field}`: unknown bound `{other}` (gt, gte, lt, lte)"
                )))
            }
        };
        let bound = match v {
            Value::Number(_) => Bound::Number(v.clone()),
            Value::Object(o) if o.len() == 1 => {
                let text = o.get("$date").and_then(Value::as_str).ok_or_else(|| {
                    err(format!(
                        "`$range.{k}` on `{field}`: expected {{\"$date\": \"..\"}}"
                    ))
                })?;
                Bound::Date(parse_datetime(text).ok_or_else(|| {
                    err(format!(
                        "`$date` in `$range.{k}` on `{field}`: `{text}` is not a datetime (RFC 3339, e.g. 2023-02-08T10:49:00Z, or 2023-02-08)"
                    ))
                })?)
            }
            _ => {
                return Err(err(format!(
                    "`$range.{k}` on `{field}` takes a number or {{\"$date\": ..}}, found `{v}`"
                )))
            }
        };
        out.push((op, bound));
    }
    Ok(out)
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Equality with numbers compared by value (so 1 == 1.0).
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => compare(a, b) == Some(Ordering::Equal),
        _ => a == b,
    }
}

fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            // Whole numbers exactly (beyond 2^53 too); otherwise as floats.
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                Some(x.cmp(&y))
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                Some(x.cmp(&y))
            } else {
                x.as_f64()?.partial_cmp(&y.as_f64()?)
            }
        }
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// A datetime in one of the forms Qdrant reads: RFC 3339 (`2023-02-08T10:49:00Z`,
/// `...+01:00`, fractions of a second), the same with a space for `T`, without a timezone
/// (UTC), `2023-02-08 10:49`, or a date alone (midnight UTC).
pub fn parse_datetime(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s).or_else(|_| s.parse::<DateTime<FixedOffset>>()) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M"))
        .or_else(|_| NaiveDate::parse_from_str(s, "%Y-%m-%d").map(|d| d.and_time(NaiveTime::MIN)))
        .ok()
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn props(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    fn check(p: &Value, id: &str, yes: &[Value], no: &[Value]) {
        let p = props(p.clone());
        for f in yes {
            let parsed = Filter::from_value(f).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert!(parsed.matches(id, &p), "should match: {f}");
        }
        for f in no {
            let parsed = Filter::from_value(f).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert!(!parsed.matches(id, &p), "should not match: {f}");
        }
    }

    fn error_of(f: Value) -> String {
        Filter::from_value(&f)
            .expect_err(&format!("{f} should be refused"))
            .to_string()
    }

    #[test]
    fn operators_behave_as_documented() {
        let p = json!({"section": "games", "size": 120, "meta": {"arch": "all"}});
        let yes = [
            json!({"section": "games"}),
            json!({"size": {"$gte": 120, "$lt": 121}}),
            json!({"size": 120.0}),
            json!({"section": {"$in": ["net", "games"]}}),
            json!({"meta.arch": "all"}),
            json!({"meta": {"arch": "all"}}),
            json!({"missing": {"$ne": 3}}),
            json!({"missing": {"$nin": [3]}}),
            json!({"$or": [{"section": "net"}, {"size": {"$gt": 100}}]}),
            json!({"$not": {"section": "net"}}),
            json!({"meta": {"$exists": true}}),
            json!({"missing": {"$exists": false}}),
            json!({}),
        ];
        let no = [
            json!({"section": "net"}),
            json!({"size": {"$gt": 120}}),
            json!({"size": {"$gt": "a"}}),
            json!({"missing": 1}),
            json!({"section": "games", "size": 1}),
            json!({"meta.arch": {"$exists": false}}),
        ];
        check(&p, "o1", &yes, &no);
    }

    #[test]
    fn whole_numbers_compare_exactly() {
        let p = json!({"big": 9_007_199_254_740_993_u64, "neg": -3});
        check(
            &p,
            "o",
            &[
                json!({"big": 9_007_199_254_740_993_u64}),
                json!({"big": {"$gt": 9_007_199_254_740_992_u64}}),
                json!({"neg": {"$lt": -2.5}}),
                json!({"neg": -3.0}),
            ],
            &[json!({"big": 9_007_199_254_740_992_u64})],
        );
    }

    #[test]
    fn arrays_match_when_any_element_does() {
        let p = json!({"tags": ["a", "b"], "sizes": [1, 5, 9], "empty": [], "nested": [[1, 2]]});
        let yes = [
            json!({"tags": "a"}),
            json!({"tags": {"$eq": "b"}}),
            json!({"tags": ["a", "b"]}),
            json!({"tags": {"$in": ["x", "b"]}}),
            json!({"tags": {"$nin": ["x", "y"]}}),
            json!({"tags": {"$ne": "c"}}),
            json!({"sizes": {"$gt": 8}}),
            json!({"sizes": {"$lt": 2}}),
            // Each bound may be met by a different element (MongoDB's rule).
            json!({"sizes": {"$gt": 6, "$lt": 4}}),
            json!({"sizes": 5.0}),
            json!({"nested": [1, 2]}),
            json!({"empty": {"$ne": 1}}),
        ];
        let no = [
            json!({"tags": "c"}),
            json!({"tags": {"$ne": "a"}}),
            json!({"tags": {"$nin": ["a"]}}),
            json!({"tags": {"$in": ["x"]}}),
            json!({"sizes": {"$gt": 9}}),
            json!({"sizes": {"$gte": 10}}),
            json!({"empty": {"$gte": 0}}),
            // Only one level of array is opened.
            json!({"nested": 1}),
        ];
        check(&p, "o", &yes, &no);
    }

    #[test]
    fn bracket_paths_yield_every_element() {
        let p = json!({
            "items": [{"k": "a", "v": 1}, {"k": "b", "v": 7, "tags": ["x"]}, 3],
            "matrix": [[1, 2], [3]],
            "point": {"xs": [{"y": 10}]},
        });
        let yes = [
            json!({"items[].k": "b"}),
            json!({"items[].v": {"$gte": 7}}),
            json!({"items[].tags[]": "x"}),
            json!({"items[]": 3}),
            json!({"items[2]": 3}),
            json!({"items[1].k": "b"}),
            json!({"matrix[]": 3}),
            json!({"matrix[][]": {"$gt": 2}}),
            json!({"matrix[0][1]": 2}),
            json!({"point.xs[].y": {"$in": [10]}}),
            json!({"items[].k": {"$exists": true}}),
            json!({"items[].zzz": {"$exists": false}}),
            json!({"items[5]": {"$exists": false}}),
            json!({"point[]": {"$exists": false}}),
        ];
        let no = [
            // A plain key does not reach through an array (Qdrant's rule): `[]` does.
            json!({"items.k": "a"}),
            json!({"items.tags": "x"}),
            json!({"point.xs.y": 10}),
            json!({"items[].k": "c"}),
            json!({"items[0].k": "b"}),
            json!({"items[].v": {"$gt": 7}}),
            json!({"items[].k": {"$ne": "a"}}),
            json!({"matrix[][]": 4}),
            json!({"items[].zzz": {"$exists": true}}),
            // `[]` on something that is not an array yields nothing.
            json!({"point[].xs": {"$exists": true}}),
        ];
        check(&p, "o", &yes, &no);
    }

    #[test]
    fn is_empty_and_is_null() {
        let p = json!({
            "null": null, "none": [], "nulls": [null], "zero": 0, "blank": "", "list": [1],
            "objs": [{"a": null}, {"a": []}], "mixed": [{"a": null}, {"a": 1}],
        });
        let yes = [
            json!({"missing": {"$isEmpty": true}}),
            json!({"null": {"$isEmpty": true}}),
            json!({"none": {"$isEmpty": true}}),
            json!({"nulls": {"$isEmpty": false}}),
            json!({"zero": {"$isEmpty": false}}),
            json!({"blank": {"$isEmpty": false}}),
            json!({"list": {"$isEmpty": false}}),
            json!({"nulls[]": {"$isEmpty": true}}),
            json!({"none[]": {"$isEmpty": true}}),
            json!({"objs[].a": {"$isEmpty": true}}),
            json!({"mixed[].a": {"$isEmpty": false}}),
            json!({"null": {"$isNull": true}}),
            json!({"nulls[]": {"$isNull": true}}),
            json!({"mixed[].a": {"$isNull": true}}),
            json!({"mixed.a": {"$isNull": false}}),
            json!({"missing": {"$isNull": false}}),
            json!({"none": {"$isNull": false}}),
            // An array with a null element is null (Qdrant's rule).
            json!({"nulls": {"$isNull": true}}),
            json!({"zero": {"$isNull": false}}),
            json!({"null": {"$exists": true}}),
        ];
        let no = [
            json!({"missing": {"$isEmpty": false}}),
            json!({"null": {"$isEmpty": false}}),
            json!({"none": {"$isEmpty": false}}),
            json!({"zero": {"$isEmpty": true}}),
            json!({"list": {"$isEmpty": true}}),
            json!({"nulls": {"$isEmpty": true}}),
            json!({"mixed[].a": {"$isEmpty": true}}),
            json!({"missing": {"$isNull": true}}),
            json!({"none": {"$isNull": true}}),
            json!({"zero": {"$isNull": true}}),
            json!({"null": {"$isNull": false}}),
        ];
        check(&p, "o", &yes, &no);
    }

    #[test]
    fn text_matches_words_and_substrings() {
        let p = json!({"title": "Rust in Action: web_apps", "tags": ["web", "embedded"], "n": 5});
        check(
            &p,
            "o",
            &[
                json!({"title": {"$text": "action RUST"}}),
                json!({"title": {"$text": "web apps"}}),
                json!({"title": {"$textAny": "go rust"}}),
                json!({"title": {"$phrase": "rust in"}}),
                json!({"title": {"$prefix": "Rust i"}}),
                json!({"title": {"$substring": "in Act"}}),
                json!({"title": {"$substring": ""}}),
                json!({"tags": {"$text": "embedded"}}),
            ],
            &[
                json!({"title": {"$text": "act"}}),
                json!({"title": {"$text": ""}}),
                json!({"title": {"$text": "rust go"}}),
                json!({"title": {"$phrase": "in rust"}}),
                json!({"title": {"$prefix": "rust"}}),
                json!({"tags": {"$substring": "bedx"}}),
                json!({"n": {"$text": "5"}}),
                json!({"missing": {"$text": "a"}}),
            ],
        );
    }

    #[test]
    fn range_and_except_follow_qdrant() {
        let p = json!({
            "xs": [1, 10], "n": 5, "flag": true, "s": "7", "tags": ["a", "b"], "only": ["a"],
            "nil": null, "none": [], "at": ["2023-01-01T00:00:00Z", "2024-06-01T12:00:00+02:00"],
        });
        check(
            &p,
            "o",
            &[
                json!({"n": {"$range": {"gt": 4, "lte": 5}}}),
                json!({"xs": {"$range": {"gte": 10}}}),
                json!({"at": {"$range": {"gt": {"$date": "2024-06-01T09:00:00Z"}}}}),
                json!({"tags": {"$except": ["a"]}}),
                json!({"n": {"$except": [4]}}),
            ],
            &[
                // Both bounds must hold for one value: 1 and 10 each fail one.
                json!({"xs": {"$range": {"gt": 2, "lt": 9}}}),
                json!({"flag": {"$range": {"gte": 0}}}),
                json!({"s": {"$range": {"gte": 0}}}),
                json!({"at": {"$range": {"gt": {"$date": "2024-06-01T10:00:00Z"}}}}),
                json!({"only": {"$except": ["a"]}}),
                json!({"nil": {"$except": ["a"]}}),
                json!({"none": {"$except": ["a"]}}),
                json!({"missing": {"$except": ["a"]}}),
            ],
        );
        for (f, says) in [
            (
                json!({"n": {"$range": {"above": 1}}}),
                "unknown bound `above`",
            ),
            (json!({"n": {"$range": {"gt": "1"}}}), "takes a number"),
            (
                json!({"n": {"$range": {"gt": {"$date": "noon"}}}}),
                "`noon` is not a datetime",
            ),
            (json!({"n": {"$except": 1}}), "takes an array"),
        ] {
            let e = error_of(f.clone());
            assert!(e.contains(says), "{f}: {e}");
        }
    }

    #[test]
    fn datetimes_compare_as_instants() {
        let p = json!({
            "utc": "2023-02-08T10:49:00Z",
            "paris": "2023-02-08T11:49:00+01:00",
            "frac": "2023-02-08T10:49:00.250Z",
            "space": "2023-02-08 10:49:00",
            "naive": "2023-02-08T10:49:00",
            "short": "2023-02-08 10:49",
            "day": "2023-02-08",
            "list": ["nope", "2024-01-01T00:00:00Z"],
            "bad": "yesterday",
            "num": 5,
        });
        let at = |op: &str, t: &str| json!({"$date": t}).pipe(op);
        let yes = [
            json!({"utc": at("$gte", "2023-02-08T10:49:00Z")}),
            json!({"utc": at("$lte", "2023-02-08T11:49:00+01:00")}),
            json!({"paris": at("$gte", "2023-02-08T10:49:00Z")}),
            json!({"paris": at("$lte", "2023-02-08T10:49:00Z")}),
            json!({"paris": at("$lt", "2023-02-08T10:49:00.001Z")}),
            json!({"frac": at("$gt", "2023-02-08T10:49:00.2Z")}),
            json!({"space": at("$gte", "2023-02-08T10:49:00Z")}),
            json!({"naive": at("$lte", "2023-02-08 10:49:00Z")}),
            json!({"short": at("$gte", "2023-02-08T10:49:00+00:00")}),
            json!({"day": at("$lte", "2023-02-08T00:00:00Z")}),
            json!({"day": at("$gte", "2023-02-07T23:00:00-01:00")}),
            json!({"utc": at("$gt", "2023-02-08")}),
            json!({"list": at("$gt", "2023-12-31")}),
            json!({"utc": {"$gt": {"$date": "2023-02-08"}, "$lt": {"$date": "2023-02-09"}}}),
        ];
        let no = [
            json!({"utc": at("$gt", "2023-02-08T11:49:00+01:00")}),
            json!({"paris": at("$lt", "2023-02-08T10:49:00Z")}),
            json!({"day": at("$gt", "2023-02-08")}),
            json!({"list": at("$lt", "2023-12-31")}),
            json!({"bad": at("$lt", "2999-01-01")}),
            json!({"num": at("$lt", "2999-01-01")}),
            json!({"missing": at("$lt", "2999-01-01")}),
        ];
        check(&p, "o", &yes, &no);
    }

    trait Pipe {
        fn pipe(self, op: &str) -> Value;
    }
    impl Pipe for Value {
        fn pipe(self, op: &str) -> Value {
            let mut m = Map::new();
            m.insert(op.to_owned(), self);
            Value::Object(m)
        }
    }

    #[test]
    fn datetime_forms_qdrant_accepts() {
        let utc = |s: &str| parse_datetime(s).map(|t| t.to_rfc3339());
        let want = Some("2023-02-08T10:49:00+00:00".to_owned());
        for s in [
            "2023-02-08T10:49:00Z",
            "2023-02-08T11:49:00+01:00",
            "2023-02-08T09:49:00-01:00",
            "2023-02-08 10:49:00Z",
            "2023-02-08 11:49:00+01:00",
            "2023-02-08T10:49:00",
            "2023-02-08 10:49:00",
            "2023-02-08T10:49:00.000",
            "2023-02-08 10:49",
        ] {
            assert_eq!(utc(s), want, "{s}");
        }
        assert_eq!(
            utc("2023-02-08T10:49:00.123456Z"),
            Some("2023-02-08T10:49:00.123456+00:00".to_owned())
        );
        assert_eq!(
            utc("2023-02-08"),
            Some("2023-02-08T00:00:00+00:00".to_owned())
        );
        for s in [
            "",
            "2023-02-30",
            "10:49",
            "2023/02/08",
            "2023-02-08T25:00:00Z",
            "soon",
        ] {
            assert_eq!(utc(s), None, "{s}");
        }
    }

    #[test]
    fn ids_match_by_value_and_in_id_order() {
        let p = json!({"a": 1});
        check(
            &p,
            "10",
            &[
                json!({"$id": "10"}),
                json!({"$id": 10}),
                json!({"$id": {"$eq": "10"}}),
                json!({"$id": {"$ne": "1"}}),
                json!({"$id": {"$in": ["x", "10"]}}),
                json!({"$id": {"$in": [7, 10]}}),
                json!({"$id": {"$nin": ["1", "x"]}}),
                // Numbers by value: 10 > 9 (byte order would say otherwise)...
                json!({"$id": {"$gt": "9"}}),
                json!({"$id": {"$gte": "10"}}),
                // ...and before every other id.
                json!({"$id": {"$lt": "010"}}),
                json!({"$id": {"$lt": "a"}}),
                json!({"$id": {"$lte": "18446744073709551616"}}),
                json!({"$and": [{"$id": {"$gt": "2"}}, {"$id": {"$lt": "11"}}], "a": 1}),
            ],
            &[
                json!({"$id": "1"}),
                json!({"$id": {"$in": []}}),
                json!({"$id": {"$nin": ["10"]}}),
                json!({"$id": {"$gt": "10"}}),
                json!({"$id": {"$lt": "9"}}),
                json!({"$not": {"$id": "10"}}),
            ],
        );
        check(
            &p,
            "b",
            &[
                json!({"$id": {"$gt": "99999"}}),
                json!({"$id": {"$gt": "a"}}),
            ],
            &[json!({"$id": {"$lt": "a"}}), json!({"$id": {"$lte": "5"}})],
        );
    }

    #[test]
    fn elem_match_needs_one_element_to_match_the_whole_filter() {
        let p = json!({
            "deps": [{"name": "libc", "ver": 6}, {"name": "zlib", "ver": 1}, "junk"],
            "meta": {"arch": "all", "size": 3},
            "words": ["a"],
            "groups": [{"members": [{"n": 1}, {"n": 2}]}],
        });
        let yes = [
            json!({"deps": {"$elemMatch": {"name": "libc", "ver": {"$gt": 5}}}}),
            json!({"deps": {"$elemMatch": {"name": "zlib"}}}),
            json!({"deps": {"$elemMatch": {}}}),
            json!({"groups": {"$elemMatch": {"members": {"$elemMatch": {"n": 2}}}}}),
            json!({"groups[].members": {"$elemMatch": {"n": 1}}}),
            json!({"deps": {"$elemMatch": {"$or": [{"ver": 1}, {"ver": 2}]}}}),
        ];
        let no = [
            // Both hold, but of different elements.
            json!({"deps": {"$elemMatch": {"name": "libc", "ver": 1}}}),
            json!({"deps": {"$elemMatch": {"name": "junk"}}}),
            // Only objects inside an array are tested, not an object itself (Qdrant's `nested`).
            json!({"meta": {"$elemMatch": {"arch": "all", "size": 3}}}),
            json!({"words": {"$elemMatch": {}}}),
            json!({"missing": {"$elemMatch": {}}}),
            json!({"groups": {"$elemMatch": {"members": {"$elemMatch": {"n": 3}}}}}),
        ];
        check(&p, "o", &yes, &no);
    }

    #[test]
    fn at_least_counts_matching_filters() {
        let p = json!({"a": 1, "b": 2, "c": 3});
        let of = json!([{"a": 1}, {"b": 0}, {"c": 3}]);
        check(
            &p,
            "o",
            &[
                json!({"$atLeast": {"count": 0, "of": []}}),
                json!({"$atLeast": {"count": 0, "of": [{"a": 9}]}}),
                json!({"$atLeast": {"count": 1, "of": of}}),
                json!({"$atLeast": {"count": 2, "of": of}}),
            ],
            &[
                json!({"$atLeast": {"count": 3, "of": of}}),
                json!({"$atLeast": {"count": 1, "of": []}}),
                json!({"$atLeast": {"count": 2, "of": of}, "a": 2}),
            ],
        );
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let cases = [
            (json!({"size": {"$gtt": 3}}), "`$gtt` on `size`"),
            (json!({"$and": 3}), "`$and` takes an array"),
            (json!({"$nor": []}), "unknown operator `$nor`"),
            (
                json!({"size": {"$gt": [1]}}),
                "`$gt` on `size` needs a number",
            ),
            (
                json!({"size": {"$in": 1}}),
                "`$in` on `size` takes an array",
            ),
            (
                json!({"x": {"$exists": 1}}),
                "`$exists` on `x` takes true or false",
            ),
            (
                json!({"x": {"$isEmpty": "yes"}}),
                "`$isEmpty` on `x` takes true or false",
            ),
            (
                json!({"x": {"$isNull": null}}),
                "`$isNull` on `x` takes true or false",
            ),
            (json!({"x": {"$text": 3}}), "`$text` on `x` takes a string"),
            (
                json!({"t": {"$gt": {"$date": "someday"}}}),
                "`$date` in `$gt` on `t`: `someday`",
            ),
            (
                json!({"t": {"$lt": {"$date": 5}}}),
                "`$date` in `$lt` on `t` takes a string",
            ),
            (
                json!({"t": {"$lt": {"$date": "2023-01-01", "x": 1}}}),
                "`$lt` on `t` needs",
            ),
            (
                json!({"t": {"$date": "2023-01-01"}}),
                "unknown operator `$date` on `t`",
            ),
            (json!({"a[x]": 1}), "bad field path `a[x]`"),
            (json!({"a[": 1}), "bad field path `a[`"),
            (json!({"a[]b": 1}), "bad field path `a[]b`"),
            (json!({"[]": 1}), "bad field path `[]`"),
            (json!({"a.[]": 1}), "bad field path `a.[]`"),
            (
                json!({"$id": {"$in": "a"}}),
                "`$in` on `$id` takes an array",
            ),
            (json!({"$id": {"$in": [true]}}), "`$in` on `$id` takes ids"),
            (json!({"$id": -1}), "`$eq` on `$id` takes ids"),
            (json!({"$id": {"$gt": 1.5}}), "`$gt` on `$id` takes ids"),
            (
                json!({"$id": {"$like": "a"}}),
                "unknown operator `$like` on `$id`",
            ),
            (
                json!({"$id": {"$gt": "a", "$lt": "b"}}),
                "`$id` takes one operator",
            ),
            (
                json!({"d": {"$elemMatch": {"$id": "a"}}}),
                "`$id` cannot be used inside `$elemMatch`",
            ),
            (
                json!({"d": {"$elemMatch": {"$or": [{"$id": "a"}]}}}),
                "`$id` cannot be used inside `$elemMatch`",
            ),
            (
                json!({"d": {"$elemMatch": 3}}),
                "`$elemMatch` on `d` takes a filter object",
            ),
            (
                json!({"d": {"$elemMatch": {"v": {"$bad": 1}}}}),
                "`$bad` on `v`",
            ),
            (json!({"$atLeast": 2}), "`$atLeast` takes {\"count\""),
            (
                json!({"$atLeast": {"count": -1, "of": []}}),
                "`$atLeast` needs `count`",
            ),
            (
                json!({"$atLeast": {"count": 1}}),
                "`$atLeast` takes {\"count\"",
            ),
            (
                json!({"$atLeast": {"count": 1, "of": {}}}),
                "`$atLeast.of` takes an array",
            ),
            (
                json!({"$atLeast": {"count": 1, "of": [], "n": 1}}),
                "unknown key `n`",
            ),
        ];
        for (f, want) in cases {
            let e = error_of(f.clone());
            assert!(e.contains(want), "{f}: `{e}` lacks `{want}`");
        }
        let e = Filter::parse("[1]").expect_err("not object");
        assert!(e.to_string().contains("expected an object"), "{e}");
        assert!(Filter::parse("{").is_err());
    }
}
