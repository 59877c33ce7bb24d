//! Values stored in redb and in the operation log, encoded with postcard (a documented, stable
//! wire format: https://postcard.jamesmunns.com/wire-format) behind a one-byte version.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const RECORD_VERSION: u8 = 1;

/// An object's stored version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredObject {
    /// JSON object text.
    pub properties: String,
    pub vector: Option<Vec<f32>>,
    pub hlc: u64,
    pub origin: u64,
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEdge {
    pub properties: String,
    pub hlc: u64,
    pub origin: u64,
    pub seq: u64,
}

/// A node reference inside the log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LogNode {
    pub collection: String,
    pub id: String,
}

/// One change as logged. Applying a log entry's changes in order reproduces the batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LogWrite {
    /// A collection's spec as JSON.
    CreateCollection { spec: String },
    Upsert {
        node: LogNode,
        properties: String,
        vector: Option<Vec<f32>>,
    },
    /// Also removes every edge touching the object.
    Delete { node: LogNode },
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
    /// Removes the collection with its objects, every edge touching them (also from other
    /// collections), its index snapshots and its node-local metadata. Appended last: variants
    /// are encoded by index, so records written before it still decode.
    DropCollection { name: String },
}

/// One committed batch: `(origin, seq) -> LogEntry` in the `oplog` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    pub hlc: u64,
    pub writes: Vec<LogWrite>,
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut out = vec![RECORD_VERSION];
    out.extend_from_slice(&postcard::to_stdvec(value)?);
    Ok(out)
}

pub fn decode<'a, T: Deserialize<'a>>(what: &str, bytes: &'a [u8]) -> Result<T> {
    match bytes.split_first() {
        Some((&RECORD_VERSION, body)) => postcard::from_bytes(body)
            .map_err(|e| Error::Storage(format!("{what} record is damaged: {e}"))),
        Some((v, _)) => Err(Error::Storage(format!(
            "{what} record has version {v}; this build reads {RECORD_VERSION}"
        ))),
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

    fn object() -> impl Strategy<Value = StoredObject> {
        (
            any::<String>(),
            vector(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(|(properties, vector, hlc, origin, seq)| StoredObject {
                properties,
                vector,
                hlc,
                origin,
                seq,
            })
    }

    fn edge() -> impl Strategy<Value = StoredEdge> {
        (any::<String>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
            |(properties, hlc, origin, seq)| StoredEdge {
                properties,
                hlc,
                origin,
                seq,
            },
        )
    }

    fn node() -> impl Strategy<Value = LogNode> {
        (any::<String>(), any::<String>()).prop_map(|(collection, id)| LogNode { collection, id })
    }

    fn write() -> impl Strategy<Value = LogWrite> {
        prop_oneof![
            any::<String>().prop_map(|spec| LogWrite::CreateCollection { spec }),
            (node(), any::<String>(), vector()).prop_map(|(node, properties, vector)| {
                LogWrite::Upsert {
                    node,
                    properties,
                    vector,
                }
            }),
            node().prop_map(|node| LogWrite::Delete { node }),
            (node(), any::<String>(), node(), any::<String>()).prop_map(
                |(from, label, to, properties)| LogWrite::Link {
                    from,
                    label,
                    to,
                    properties,
                }
            ),
            (node(), any::<String>(), node()).prop_map(|(from, label, to)| LogWrite::Unlink {
                from,
                label,
                to
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
        (&a.properties, bits(&a.vector), a.hlc, a.origin, a.seq)
            == (&b.properties, bits(&b.vector), b.hlc, b.origin, b.seq)
    }

    fn same_write(a: &LogWrite, b: &LogWrite) -> bool {
        match (a, b) {
            (
                LogWrite::Upsert {
                    node,
                    properties,
                    vector,
                },
                LogWrite::Upsert {
                    node: n2,
                    properties: p2,
                    vector: v2,
                },
            ) => (node, properties, bits(vector)) == (n2, p2, bits(v2)),
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
        fn check<T: for<'a> Deserialize<'a>>(
            what: &str,
            bytes: &[u8],
        ) -> Result<(), TestCaseError> {
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

    /// Variant indexes are the encoding: the older kinds keep theirs, so logs written before
    /// `DropCollection` existed still decode.
    #[test]
    fn log_write_variants_keep_their_indexes() {
        let node = || LogNode {
            collection: "c".into(),
            id: "a".into(),
        };
        let index = |w: LogWrite| postcard::to_stdvec(&w).expect("encode")[0];
        assert_eq!(index(LogWrite::CreateCollection { spec: "{}".into() }), 0);
        assert_eq!(
            index(LogWrite::Upsert {
                node: node(),
                properties: "{}".into(),
                vector: None
            }),
            1
        );
        assert_eq!(index(LogWrite::Delete { node: node() }), 2);
        assert_eq!(
            index(LogWrite::Link {
                from: node(),
                label: "l".into(),
                to: node(),
                properties: "{}".into()
            }),
            3
        );
        assert_eq!(
            index(LogWrite::Unlink {
                from: node(),
                label: "l".into(),
                to: node()
            }),
            4
        );
        assert_eq!(index(LogWrite::DropCollection { name: "c".into() }), 5);
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
