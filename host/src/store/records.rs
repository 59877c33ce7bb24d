//! Values stored in redb and in the operation log, encoded with postcard (a documented, stable
//! wire format: https://postcard.jamesmunns.com/wire-format) behind a one-byte version.
//!
//! Version 2 (replication) added versions: each object and edge carries what its write had
//! seen (its causal context), deletes leave tombstones, and each logged write carries the
//! context it was made in. Version 1 records (written before) still decode: they had seen
//! nothing but themselves.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::replication::version::{Clock, Version};

pub const RECORD_VERSION: u8 = 2;

/// An object's visible version: what the engine indexes and reads return.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredObject {
    /// JSON object text.
    pub properties: String,
    pub vector: Option<Vec<f32>>,
    pub hlc: u64,
    pub origin: u64,
    pub seq: u64,
    /// What the write had seen of this object, besides its own dot.
    pub seen: Clock,
}

/// An edge's visible version (stored under `from -label-> to`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEdge {
    pub properties: String,
    pub hlc: u64,
    pub origin: u64,
    pub seq: u64,
    pub seen: Clock,
}

impl StoredObject {
    pub fn version(&self) -> Version {
        Version::new(self.hlc, self.origin, self.seq, &self.seen)
    }
}

impl StoredEdge {
    pub fn version(&self) -> Version {
        Version::new(self.hlc, self.origin, self.seq, &self.seen)
    }
}

/// A version of an object or edge other than its visible live one: a tombstone, or a sibling
/// its collection's policy does not show (kept in the `versions` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSibling {
    pub hlc: u64,
    pub origin: u64,
    pub seq: u64,
    pub seen: Clock,
    pub value: SiblingValue,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SiblingValue {
    Deleted,
    Object {
        properties: String,
        vector: Option<Vec<f32>>,
    },
    Edge {
        properties: String,
    },
}

/// A node reference inside the log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LogNode {
    pub collection: String,
    pub id: String,
}

/// One change as logged. Applying a log entry's changes in order reproduces the batch. `seen`
/// is the causal context the write was made in (what it replaces), besides its own dot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LogWrite {
    /// A collection's spec as JSON.
    CreateCollection { spec: String },
    Upsert {
        node: LogNode,
        properties: String,
        vector: Option<Vec<f32>>,
        seen: Clock,
    },
    /// A tombstone. The edges the object had when it was deleted are removed by `Unlink`
    /// writes of the same entry.
    Delete { node: LogNode, seen: Clock },
    Link {
        from: LogNode,
        label: String,
        to: LogNode,
        properties: String,
        seen: Clock,
    },
    Unlink {
        from: LogNode,
        label: String,
        to: LogNode,
        seen: Clock,
    },
    /// Removes the collection with its objects, every edge touching them (also from other
    /// collections), its index snapshots and its node-local metadata.
    DropCollection { name: String },
    /// A plugin's whole record after a change, merged into the stored one
    /// (`PluginRecord::merge`), with the component bytes when the change uploaded them.
    Plugin {
        record: crate::plugins::PluginRecord,
        blob: Option<Vec<u8>>,
    },
}

/// One committed batch: `(origin, seq) -> LogEntry` in the `oplog` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    pub hlc: u64,
    pub writes: Vec<LogWrite>,
}

/// A stored record type; `decode_old` reads the layouts of earlier record versions.
pub trait Record: Serialize + DeserializeOwned {
    fn decode_old(version: u8, body: &[u8]) -> Option<postcard::Result<Self>> {
        (version == 1).then(|| postcard::from_bytes(body))
    }
}

impl Record for super::tokens::StoredToken {}

/// Version 1 layouts, read when opening a database written before replication.
mod v1 {
    use super::LogNode;
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct Object {
        pub properties: String,
        pub vector: Option<Vec<f32>>,
        pub hlc: u64,
        pub origin: u64,
        pub seq: u64,
    }

    #[derive(Deserialize)]
    pub struct Edge {
        pub properties: String,
        pub hlc: u64,
        pub origin: u64,
        pub seq: u64,
    }

    #[derive(Deserialize)]
    pub enum Write {
        CreateCollection {
            spec: String,
        },
        Upsert {
            node: LogNode,
            properties: String,
            vector: Option<Vec<f32>>,
        },
        Delete {
            node: LogNode,
        },
        Link {
            from: LogNode,
            label: String,
            to: LogNode,
            properties: String,
        },
        Unlink {
            from: LogNode,
            label: String,
            to: LogNode,
        },
        DropCollection {
            name: String,
        },
    }

    #[derive(Deserialize)]
    pub struct Entry {
        pub hlc: u64,
        pub writes: Vec<Write>,
    }
}

impl Record for StoredObject {
    fn decode_old(version: u8, body: &[u8]) -> Option<postcard::Result<Self>> {
        (version == 1).then(|| {
            postcard::from_bytes::<v1::Object>(body).map(|o| StoredObject {
                properties: o.properties,
                vector: o.vector,
                hlc: o.hlc,
                origin: o.origin,
                seq: o.seq,
                seen: Clock::default(),
            })
        })
    }
}

impl Record for StoredEdge {
    fn decode_old(version: u8, body: &[u8]) -> Option<postcard::Result<Self>> {
        (version == 1).then(|| {
            postcard::from_bytes::<v1::Edge>(body).map(|e| StoredEdge {
                properties: e.properties,
                hlc: e.hlc,
                origin: e.origin,
                seq: e.seq,
                seen: Clock::default(),
            })
        })
    }
}

impl Record for Vec<StoredSibling> {
    fn decode_old(_: u8, _: &[u8]) -> Option<postcard::Result<Self>> {
        None
    }
}

impl Record for LogEntry {
    fn decode_old(version: u8, body: &[u8]) -> Option<postcard::Result<Self>> {
        let seen = Clock::default;
        (version == 1).then(|| {
            postcard::from_bytes::<v1::Entry>(body).map(|e| LogEntry {
                hlc: e.hlc,
                writes: e
                    .writes
                    .into_iter()
                    .map(|w| match w {
                        v1::Write::CreateCollection { spec } => LogWrite::CreateCollection { spec },
                        v1::Write::Upsert {
                            node,
                            properties,
                            vector,
                        } => LogWrite::Upsert {
                            node,
                            properties,
                            vector,
                            seen: seen(),
                        },
                        v1::Write::Delete { node } => LogWrite::Delete { node, seen: seen() },
                        v1::Write::Link {
                            from,
                            label,
                            to,
                            properties,
                        } => LogWrite::Link {
                            from,
                            label,
                            to,
                            properties,
                            seen: seen(),
                        },
                        v1::Write::Unlink { from, label, to } => LogWrite::Unlink {
                            from,
                            label,
                            to,
                            seen: seen(),
                        },
                        v1::Write::DropCollection { name } => LogWrite::DropCollection { name },
                    })
                    .collect(),
            })
        })
    }
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut out = vec![RECORD_VERSION];
    out.extend_from_slice(&postcard::to_stdvec(value)?);
    Ok(out)
}

pub fn decode<T: Record>(what: &str, bytes: &[u8]) -> Result<T> {
    let damaged = |e: postcard::Error| Error::Storage(format!("{what} record is damaged: {e}"));
    match bytes.split_first() {
        Some((&RECORD_VERSION, body)) => postcard::from_bytes(body).map_err(damaged),
        Some((&v, body)) => match T::decode_old(v, body) {
            Some(r) => r.map_err(damaged),
            None => Err(Error::Storage(format!(
                "{what} record has version {v}; this build reads {RECORD_VERSION}"
            ))),
        },
        None => Err(Error::Storage(format!("{what} record is empty"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Any bit pattern (NaNs with payloads, infinities, -0.0) and ordinary values.
    fn float() -> impl Strategy<Value = f32> {
        prop_oneof![
            any::<u32>().prop_map(f32::from_bits),
            any::<f32>(),
            Just(f32::NAN),
            Just(f32::INFINITY),
            Just(f32::NEG_INFINITY),
            Just(-0.0f32),
        ]
    }

    fn vector() -> impl Strategy<Value = Option<Vec<f32>>> {
        proptest::option::of(proptest::collection::vec(float(), 0..40))
    }

    fn clock() -> impl Strategy<Value = Clock> {
        proptest::collection::btree_map(any::<u64>(), any::<u64>(), 0..4).prop_map(Clock)
    }

    fn object() -> impl Strategy<Value = StoredObject> {
        (
            any::<String>(),
            vector(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            clock(),
        )
            .prop_map(
                |(properties, vector, hlc, origin, seq, seen)| StoredObject {
                    properties,
                    vector,
                    hlc,
                    origin,
                    seq,
                    seen,
                },
            )
    }

    fn edge() -> impl Strategy<Value = StoredEdge> {
        (
            any::<String>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            clock(),
        )
            .prop_map(|(properties, hlc, origin, seq, seen)| StoredEdge {
                properties,
                hlc,
                origin,
                seq,
                seen,
            })
    }

    fn node() -> impl Strategy<Value = LogNode> {
        (any::<String>(), any::<String>()).prop_map(|(collection, id)| LogNode { collection, id })
    }

    fn write() -> impl Strategy<Value = LogWrite> {
        prop_oneof![
            any::<String>().prop_map(|spec| LogWrite::CreateCollection { spec }),
            (node(), any::<String>(), vector(), clock()).prop_map(
                |(node, properties, vector, seen)| LogWrite::Upsert {
                    node,
                    properties,
                    vector,
                    seen,
                }
            ),
            (node(), clock()).prop_map(|(node, seen)| LogWrite::Delete { node, seen }),
            (node(), any::<String>(), node(), any::<String>(), clock()).prop_map(
                |(from, label, to, properties, seen)| LogWrite::Link {
                    from,
                    label,
                    to,
                    properties,
                    seen,
                }
            ),
            (node(), any::<String>(), node(), clock()).prop_map(|(from, label, to, seen)| {
                LogWrite::Unlink {
                    from,
                    label,
                    to,
                    seen,
                }
            }),
            any::<String>().prop_map(|name| LogWrite::DropCollection { name }),
        ]
    }

    fn entry() -> impl Strategy<Value = LogEntry> {
        (any::<u64>(), proptest::collection::vec(write(), 0..6))
            .prop_map(|(hlc, writes)| LogEntry { hlc, writes })
    }

    fn bits(v: &Option<Vec<f32>>) -> Option<Vec<u32>> {
        v.as_ref().map(|v| v.iter().map(|x| x.to_bits()).collect())
    }

    /// Equality with floats compared bit for bit (so a NaN equals itself).
    fn same_object(a: &StoredObject, b: &StoredObject) -> bool {
        (
            &a.properties,
            bits(&a.vector),
            a.hlc,
            a.origin,
            a.seq,
            &a.seen,
        ) == (
            &b.properties,
            bits(&b.vector),
            b.hlc,
            b.origin,
            b.seq,
            &b.seen,
        )
    }

    fn same_write(a: &LogWrite, b: &LogWrite) -> bool {
        match (a, b) {
            (
                LogWrite::Upsert {
                    node,
                    properties,
                    vector,
                    seen,
                },
                LogWrite::Upsert {
                    node: n2,
                    properties: p2,
                    vector: v2,
                    seen: s2,
                },
            ) => (node, properties, bits(vector), seen) == (n2, p2, bits(v2), s2),
            _ => a == b,
        }
    }

    fn same_entry(a: &LogEntry, b: &LogEntry) -> bool {
        a.hlc == b.hlc
            && a.writes.len() == b.writes.len()
            && a.writes
                .iter()
                .zip(&b.writes)
                .all(|(x, y)| same_write(x, y))
    }

    /// Decodes `bytes` as each record kind: each must give a value or a storage error that
    /// names the kind.
    fn decode_all(bytes: &[u8]) -> Result<(), TestCaseError> {
        fn check<T: Record>(what: &str, bytes: &[u8]) -> Result<(), TestCaseError> {
            match decode::<T>(what, bytes) {
                Ok(_) => Ok(()),
                Err(Error::Storage(text)) if text.starts_with(&format!("{what} record ")) => Ok(()),
                Err(e) => Err(TestCaseError::fail(format!(
                    "{what}: unexpected error {e:?}"
                ))),
            }
        }
        check::<StoredObject>("object", bytes)?;
        check::<StoredEdge>("edge", bytes)?;
        check::<LogEntry>("log entry", bytes)
    }

    /// A change to a valid encoding.
    #[derive(Debug, Clone)]
    enum Damage {
        Flip(prop::sample::Index, u8),
        Truncate(prop::sample::Index),
        Insert(prop::sample::Index, u8),
        Delete(prop::sample::Index),
        /// Overwrite with a LEB128 varint's worth of 0xff (a huge length or count).
        Huge(prop::sample::Index),
    }

    fn damage() -> impl Strategy<Value = Damage> {
        use prop::sample::Index;
        prop_oneof![
            (any::<Index>(), 1..=255u8).prop_map(|(i, m)| Damage::Flip(i, m)),
            any::<Index>().prop_map(Damage::Truncate),
            (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Damage::Insert(i, b)),
            any::<Index>().prop_map(Damage::Delete),
            any::<Index>().prop_map(Damage::Huge),
        ]
    }

    /// `bytes` (never empty: the version byte) with `d` applied.
    fn damaged(bytes: &[u8], d: &Damage) -> Vec<u8> {
        let mut out = bytes.to_vec();
        match d {
            Damage::Flip(i, mask) => out[i.index(bytes.len())] ^= mask,
            Damage::Truncate(i) => out.truncate(i.index(bytes.len())),
            Damage::Insert(i, b) => out.insert(i.index(bytes.len() + 1), *b),
            Damage::Delete(i) => drop(out.remove(i.index(bytes.len()))),
            Damage::Huge(i) => {
                let at = i.index(bytes.len());
                let end = (at + 9).min(out.len());
                out[at..end].fill(0xff);
            }
        }
        out
    }

    proptest! {
        #[test]
        fn records_round_trip_bit_for_bit(o in object(), e in edge(), l in entry()) {
            let back: StoredObject = decode("object", &encode(&o).expect("encode"))
                .expect("decode");
            prop_assert!(same_object(&back, &o), "{back:?} != {o:?}");
            let back: StoredEdge = decode("edge", &encode(&e).expect("encode")).expect("decode");
            prop_assert_eq!(back, e);
            let back: LogEntry = decode("log entry", &encode(&l).expect("encode"))
                .expect("decode");
            prop_assert!(same_entry(&back, &l), "{back:?} != {l:?}");
        }

        #[test]
        fn arbitrary_bytes_decode_or_give_an_error_naming_the_record(
            body in proptest::collection::vec(any::<u8>(), 0..256),
            version in prop_oneof![Just(None), Just(Some(RECORD_VERSION)), any::<u8>().prop_map(Some)],
        ) {
            let bytes: Vec<u8> = version.into_iter().chain(body).collect();
            decode_all(&bytes)?;
        }

        #[test]
        fn damaged_records_decode_or_give_an_error_naming_the_record(
            o in object(),
            l in entry(),
            d in damage(),
        ) {
            decode_all(&damaged(&encode(&o).expect("encode"), &d))?;
            decode_all(&damaged(&encode(&l).expect("encode"), &d))?;
        }
    }

    /// Version 1 records (before replication) still decode, as having seen nothing else.
    #[test]
    fn version_1_records_still_decode() {
        #[derive(Serialize)]
        enum OldWrite {
            _Create {
                spec: String,
            },
            Upsert {
                node: LogNode,
                properties: String,
                vector: Option<Vec<f32>>,
            },
        }
        #[derive(Serialize)]
        struct OldEntry {
            hlc: u64,
            writes: Vec<OldWrite>,
        }
        let node = LogNode {
            collection: "c".into(),
            id: "a".into(),
        };
        let mut bytes = vec![1u8];
        bytes.extend(
            postcard::to_stdvec(&OldEntry {
                hlc: 7,
                writes: vec![OldWrite::Upsert {
                    node: node.clone(),
                    properties: "{}".into(),
                    vector: Some(vec![1.0]),
                }],
            })
            .expect("encode"),
        );
        let entry: LogEntry = decode("log entry", &bytes).expect("decode");
        assert_eq!(
            entry,
            LogEntry {
                hlc: 7,
                writes: vec![LogWrite::Upsert {
                    node,
                    properties: "{}".into(),
                    vector: Some(vec![1.0]),
                    seen: Clock::default(),
                }],
            }
        );
        let mut bytes = vec![1u8];
        bytes.extend(postcard::to_stdvec(&("{}", 1u64, 2u64, 3u64)).expect("encode"));
        let e: StoredEdge = decode("edge", &bytes).expect("decode");
        assert_eq!(
            (e.hlc, e.origin, e.seq, e.seen),
            (1, 2, 3, Clock::default())
        );
    }

    #[test]
    fn errors_name_the_record_and_what_is_wrong() {
        let text = |r: Result<StoredEdge>| r.err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(text(decode("edge", &[])), "storage: edge record is empty");
        assert_eq!(
            text(decode("edge", &[9, 0])),
            format!("storage: edge record has version 9; this build reads {RECORD_VERSION}")
        );
        assert!(text(decode("edge", &[RECORD_VERSION, 0xff]))
            .starts_with("storage: edge record is damaged: "));
    }
}
