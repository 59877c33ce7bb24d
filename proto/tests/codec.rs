//! The codec against arbitrary values and arbitrary bytes: every request and response
//! round-trips, and no input (random or a mutated valid frame) makes a decoder panic or
//! allocate more than its input. `PROPTEST_CASES` sets the number of cases (`just fuzz` runs
//! many).

use proptest::prelude::*;
use serde_json::{json, Value};
use vektagraf_proto::codec::{from_bytes, Wire};
use vektagraf_proto::frame::{parse_header, HEADER_LEN};
use vektagraf_proto::model::*;
use vektagraf_proto::{
    decode_response, encode_response, ErrorCode, ErrorReply, Op, Reply, Request, Response,
};

fn name() -> impl Strategy<Value = String> {
    "[a-z0-9_-]{0,12}"
}

fn json_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({})),
        (name(), any::<i32>()).prop_map(|(k, v)| json!({ k: v })),
        (name(), name()).prop_map(|(k, v)| json!({ k: { "nested": [v, 1.5, null, true] } })),
    ]
}

/// Finite floats (NaN never equals itself; the codec keeps bits, checked separately).
fn vector() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(-1e6f32..1e6, 0..40)
}

fn key() -> impl Strategy<Value = NodeKey> {
    (name(), name()).prop_map(|(c, i)| NodeKey::new(c, i))
}

fn write() -> impl Strategy<Value = Write> {
    prop_oneof![
        (key(), json_value(), prop::option::of(vector())).prop_map(|(key, properties, vector)| {
            Write::Upsert {
                key,
                properties,
                vector,
            }
        }),
        key().prop_map(|key| Write::Delete { key }),
        (key(), name(), key(), json_value()).prop_map(|(from, label, to, properties)| {
            Write::Link {
                from,
                label,
                to,
                properties,
            }
        }),
        (key(), name(), key()).prop_map(|(from, label, to)| Write::Unlink { from, label, to }),
        (
            key(),
            name(),
            prop::option::of(json_value()),
            prop::option::of(vector())
        )
            .prop_map(|(key, context, properties, vector)| Write::Resolve {
                key,
                context,
                properties,
                vector,
            }),
    ]
}

fn spec() -> impl Strategy<Value = CollectionSpec> {
    (
        name(),
        any::<u32>(),
        0..3u8,
        any::<bool>(),
        any::<(u32, u32, u32, u32)>(),
        0..4u8,
    )
        .prop_map(
            |(n, dimension, metric, hora, (m, ef_construction, ef_search, shards), conflict)| {
                CollectionSpec {
                    name: n,
                    dimension,
                    metric: [Metric::Cosine, Metric::Dot, Metric::Euclidean][metric as usize],
                    index: if hora {
                        IndexKind::Hora
                    } else {
                        IndexKind::Hnsw
                    },
                    m,
                    ef_construction,
                    ef_search,
                    shards,
                    conflict: [
                        ConflictPolicy::LastWriteWins,
                        ConflictPolicy::FirstWriteWins,
                        ConflictPolicy::VectorClock,
                        ConflictPolicy::Manual,
                    ][conflict as usize],
                    resolver: (m % 3 == 0).then(|| format!("resolver-{m}")),
                }
            },
        )
}

fn search_options() -> impl Strategy<Value = SearchOptions> {
    (
        0..10_000usize,
        prop::option::of(any::<u32>()),
        prop::option::of(json_value()),
        any::<bool>(),
    )
        .prop_map(|(k, ef, filter, exact)| SearchOptions {
            k,
            ef,
            filter,
            exact,
        })
}

fn traverse_options() -> impl Strategy<Value = TraverseOptions> {
    (prop::option::of(name()), 0..3u8, any::<u32>(), any::<u32>()).prop_map(
        |(label, d, depth, limit)| TraverseOptions {
            label,
            direction: [Direction::Out, Direction::In, Direction::Both][d as usize],
            depth,
            limit,
        },
    )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Ping {}),
        spec().prop_map(|spec| Op::CreateCollection { spec }),
        Just(Op::ListCollections {}),
        (
            prop::collection::vec(write(), 0..6),
            prop::option::of(name())
        )
            .prop_map(|(writes, idempotency_key)| Op::Write {
                batch: Batch { writes },
                idempotency_key
            }),
        (name(), prop::collection::vec(name(), 0..5))
            .prop_map(|(collection, ids)| Op::Get { collection, ids }),
        (name(), search_options(), vector()).prop_map(|(collection, options, vectors)| {
            Op::Search {
                collection,
                options,
                vectors,
            }
        }),
        (name(), json_value(), any::<u32>()).prop_map(|(collection, expression, limit)| {
            Op::Filter {
                collection,
                expression,
                limit,
            }
        }),
        (key(), traverse_options()).prop_map(|(start, options)| Op::Traverse { start, options }),
        (name(), vector(), search_options(), traverse_options()).prop_map(
            |(collection, vector, search, expand)| {
                Op::Hybrid {
                    collection,
                    vector,
                    search,
                    expand,
                }
            }
        ),
        (key(), prop::option::of(name())).prop_map(|(node, label)| Op::Edges {
            node,
            label,
            direction: Direction::Both
        }),
        prop::option::of(name()).prop_map(|collection| Op::Stats { collection }),
        Just(Op::Checkpoint {}),
        name().prop_map(|name| Op::TokenCreate {
            name,
            role: Role::Write
        }),
        Just(Op::TokenList {}),
        name().prop_map(|id| Op::TokenRevoke { id }),
        name().prop_map(|collection| Op::Digest { collection }),
        Just(Op::ClusterStatus {}),
        (name(), name()).prop_map(|(collection, id)| Op::Versions { collection, id }),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    (any::<u32>(), name(), op()).prop_map(|(timeout_ms, token, op)| Request {
        timeout_ms,
        token,
        op,
    })
}

fn receipt() -> impl Strategy<Value = Receipt> {
    any::<(u64, u64, u64)>().prop_map(|(origin, seq, hlc)| Receipt { origin, seq, hlc })
}

fn hit() -> impl Strategy<Value = Hit> {
    (name(), -1e6f32..1e6).prop_map(|(id, score)| Hit { id, score })
}

fn step() -> impl Strategy<Value = Step> {
    (key(), any::<u32>(), prop::option::of((name(), key()))).prop_map(|(node, depth, via)| Step {
        node,
        depth,
        via,
    })
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        (any::<u64>(), name(), any::<bool>()).prop_map(|(node_id, version, ready)| Ok(
            Reply::Pong {
                node_id,
                version,
                ready
            }
        )),
        prop::collection::vec(spec(), 0..3).prop_map(|specs| Ok(Reply::Collections { specs })),
        receipt().prop_map(|receipt| Ok(Reply::Written { receipt })),
        prop::collection::vec(
            prop::option::of((name(), json_value(), prop::option::of(vector()), receipt())),
            0..4
        )
        .prop_map(|v| Ok(Reply::Objects {
            objects: v
                .into_iter()
                .map(|o| o.map(|(id, properties, vector, version)| Object {
                    id,
                    properties,
                    vector,
                    version
                }))
                .collect()
        })),
        prop::collection::vec(prop::collection::vec(hit(), 0..4), 0..4)
            .prop_map(|rows| Ok(Reply::Hits { rows })),
        prop::collection::vec(step(), 0..5).prop_map(|steps| Ok(Reply::Steps { steps })),
        (hit(), prop::collection::vec(step(), 0..3)).prop_map(|(hit, neighbours)| Ok(
            Reply::Hybrid {
                hits: vec![HybridHit { hit, neighbours }]
            }
        )),
        (key(), name(), key(), json_value()).prop_map(|(from, label, to, properties)| Ok(
            Reply::Edges {
                edges: vec![Edge {
                    from,
                    label,
                    to,
                    properties
                }]
            }
        )),
        (spec(), any::<(u64, u64, u64, u64, u64)>()).prop_map(
            |(spec, (objects, vectors, deleted_slots, engine_memory_bytes, snapshot_seq))| {
                Ok(Reply::Stats {
                    stats: vec![CollectionStats {
                        spec,
                        objects,
                        vectors,
                        deleted_slots,
                        engine_memory_bytes,
                        snapshot_seq,
                    }],
                })
            }
        ),
        Just(Ok(Reply::Done {})),
        (name(), name(), any::<u64>()).prop_map(|(id, token, created_ms)| Ok(Reply::Token {
            token: NewToken {
                info: TokenInfo {
                    id,
                    name: "n".into(),
                    role: Role::Admin,
                    created_ms
                },
                token
            }
        })),
        any::<bool>().prop_map(|revoked| Ok(Reply::Revoked { revoked })),
        (any::<u128>(), any::<(u64, u64, u64)>()).prop_map(|(sum, (objects, edges, versions))| {
            Ok(Reply::Digest {
                digest: format!("{sum:032x}"),
                objects,
                edges,
                versions,
            })
        }),
        prop_oneof![
            Just("null".to_owned()),
            (name(), any::<u64>()).prop_map(|(node, lag)| json!({
                "node": node,
                "peers": [{"id": "b", "connected": true, "lag_ops": lag}],
            })
            .to_string()),
        ]
        .prop_map(|status| Ok(Reply::Cluster { status })),
        (
            name(),
            prop::collection::vec(
                (
                    any::<(u64, u64, u64, bool)>(),
                    prop::option::of(json_value()),
                    prop::option::of(vector())
                ),
                0..3
            )
        )
            .prop_map(|(context, vs)| Ok(Reply::Versions {
                versions: ObjectVersions {
                    context,
                    versions: vs
                        .into_iter()
                        .map(|((hlc, origin, seq, visible), properties, vector)| {
                            ObjectVersion {
                                hlc,
                                origin,
                                seq,
                                visible,
                                properties,
                                vector,
                            }
                        })
                        .collect(),
                }
            })),
        (1..=12u8, ".{0,40}").prop_map(|(c, message)| Err(ErrorReply {
            code: ErrorCode::from_u8(c).unwrap_or(ErrorCode::Internal),
            message
        })),
    ]
}

/// The body of a frame (after the 5-byte header), checking the header on the way.
fn body(frame: &[u8]) -> &[u8] {
    let header: [u8; HEADER_LEN] = frame[..HEADER_LEN]
        .try_into()
        .expect("a frame has a header");
    let len = parse_header(header, u64::MAX).expect("our own header is valid");
    assert_eq!(
        len,
        frame.len() - HEADER_LEN,
        "the header counts the body exactly"
    );
    &frame[HEADER_LEN..]
}

proptest! {
    #[test]
    fn requests_round_trip(r in request()) {
        let frame = r.encode();
        prop_assert_eq!(Request::decode(body(&frame)).expect("decodes"), r);
    }

    #[test]
    fn responses_round_trip(r in response()) {
        let frame = encode_response(&r);
        prop_assert_eq!(decode_response(body(&frame)).expect("decodes"), r);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Request::decode(&bytes);
        let _ = decode_response(&bytes);
        if let Ok(h) = <[u8; HEADER_LEN]>::try_from(&bytes[..bytes.len().min(HEADER_LEN)]) {
            let _ = parse_header(h, 1 << 20);
        }
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        r in request(),
        resp in response(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        for frame in [r.encode(), encode_response(&resp)] {
            let mut b = frame[HEADER_LEN..].to_vec();
            if b.is_empty() { continue; }
            for (i, x) in &flips {
                let i = i.index(b.len());
                b[i] ^= x | 1;
            }
            let _ = Request::decode(&b);
            let _ = decode_response(&b);
            // Truncated anywhere: an error, never a panic, never a value.
            let t = &frame[HEADER_LEN..HEADER_LEN + cut.index(frame.len() - HEADER_LEN)];
            prop_assert!(Request::decode(t).is_err() || decode_response(t).is_err());
        }
    }
}

#[test]
fn a_huge_count_is_refused_before_allocating() {
    // A list claiming 4 billion vectors in a 9-byte body.
    let mut b = u32::MAX.to_le_bytes().to_vec();
    b.extend_from_slice(&[0; 5]);
    let e = from_bytes::<Vec<Vec<f32>>>(&b, "rows").expect_err("too short");
    assert_eq!(e.to_string(), "frame ends inside `rows`");
}

#[test]
fn non_finite_floats_keep_their_bits() {
    let v = vec![f32::NAN, f32::INFINITY, -0.0, f32::MIN_POSITIVE];
    let mut out = Vec::new();
    v.put(&mut out);
    let back: Vec<f32> = from_bytes(&out, "v").expect("decodes");
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&back), bits(&v));
}

#[test]
fn frame_header_checks() {
    use vektagraf_proto::FrameError;
    assert_eq!(parse_header([0, 0, 0, 0, 1], 100), Err(FrameError::Empty));
    assert_eq!(
        parse_header([200, 0, 0, 0, 1], 100),
        Err(FrameError::TooLarge { len: 200, max: 100 })
    );
    assert_eq!(
        parse_header([2, 0, 0, 0, 7], 100),
        Err(FrameError::UnsupportedVersion(7))
    );
    assert_eq!(parse_header([3, 0, 0, 0, 1], 100), Ok(2));
}

/// The tokenless search of docs/protocol.md ("Search: 109 bytes"), byte for byte.
#[test]
fn the_documented_search_frame() {
    let req = Request {
        timeout_ms: 0,
        token: String::new(),
        op: Op::Search {
            collection: "docs".into(),
            options: SearchOptions::k(2),
            vectors: vec![1.0, 0.0, 0.5],
        },
    };
    let hex: Vec<String> = req.encode().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex.join(" "),
        "29 00 00 00 01 00 00 00 00 00 00 00 00 06 04 00 \
         00 00 64 6f 63 73 02 00 00 00 00 00 00 03 00 00 \
         00 00 00 80 3f 00 00 00 00 00 00 00 3f"
    );
}

/// The replication read ops: their tags, names and role (docs/protocol.md §5, §6).
#[test]
fn digest_and_cluster_status_are_reads_with_their_own_tags() {
    let digest = Op::Digest {
        collection: "c".into(),
    };
    let status = Op::ClusterStatus {};
    assert_eq!((digest.tag(), digest.name()), (16, "digest"));
    assert_eq!((status.tag(), status.name()), (17, "cluster_status"));
    for op in [&digest, &status] {
        assert_eq!(op.required_role(), Some(Role::Read));
        assert!(op.is_idempotent());
    }
    let reply = Reply::Cluster {
        status: "null".into(),
    };
    assert_eq!((reply.tag(), reply.name()), (17, "cluster"));
    let reply = Reply::Digest {
        digest: "0".repeat(32),
        objects: 1,
        edges: 2,
        versions: 3,
    };
    assert_eq!((reply.tag(), reply.name()), (16, "digest"));
    // status 00, tag 16, a 32-byte string, three u64.
    let frame = encode_response(&Ok(reply.clone()));
    assert_eq!(body(&frame).len(), 1 + 1 + 4 + 32 + 3 * 8);
    assert_eq!(decode_response(body(&frame)), Ok(Ok(reply)));
}
