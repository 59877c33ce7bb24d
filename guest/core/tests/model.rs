//! Filters, filtered k-NN and traversal checked against naive in-test models.

use std::collections::{BTreeMap, HashSet, VecDeque};

use proptest::prelude::*;
use serde_json::{json, Value};
use vektagraf_engine_core::filter::Filter;
use vektagraf_engine_core::shard::{SearchRequest, Shard};
use vektagraf_engine_core::traverse::{
    bfs, Direction, EdgeRef, EdgeSource, NodeRef, TraverseRequest,
};
use vektagraf_engine_core::{CollectionConfig, IndexKind, Metric, Mutation, Object};

const SECTIONS: [&str; 4] = ["games", "net", "libs", "doc"];

fn config(index: IndexKind) -> CollectionConfig {
    CollectionConfig {
        name: "m".into(),
        dimension: 8,
        metric: Metric::Euclidean,
        index,
        m: 8,
        ef_construction: 64,
        ef_search: 32,
        shards: 1,
    }
}

/// A random filter and the model's own reading of it.
#[derive(Debug, Clone)]
enum F {
    Sec(usize),
    SizeLt(i64),
    SizeGte(i64),
    In(Vec<usize>),
    Not(Box<F>),
    And(Box<F>, Box<F>),
    Or(Box<F>, Box<F>),
}

fn arb_filter() -> impl Strategy<Value = F> {
    let leaf = prop_oneof![
        (0..4usize).prop_map(F::Sec),
        (0..100i64).prop_map(F::SizeLt),
        (0..100i64).prop_map(F::SizeGte),
        proptest::collection::vec(0..4usize, 0..3).prop_map(F::In),
    ];
    leaf.prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|f| F::Not(Box::new(f))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| F::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner).prop_map(|(a, b)| F::Or(Box::new(a), Box::new(b))),
        ]
    })
}

impl F {
    fn json(&self) -> Value {
        match self {
            F::Sec(s) => json!({"section": SECTIONS[*s]}),
            F::SizeLt(n) => json!({"size": {"$lt": n}}),
            F::SizeGte(n) => json!({"size": {"$gte": n}}),
            F::In(v) => {
                json!({"section": {"$in": v.iter().map(|i| SECTIONS[*i]).collect::<Vec<_>>()}})
            }
            F::Not(f) => json!({"$not": f.json()}),
            F::And(a, b) => json!({"$and": [a.json(), b.json()]}),
            F::Or(a, b) => json!({"$or": [a.json(), b.json()]}),
        }
    }
    fn eval(&self, sec: usize, size: i64) -> bool {
        match self {
            F::Sec(s) => *s == sec,
            F::SizeLt(n) => size < *n,
            F::SizeGte(n) => size >= *n,
            F::In(v) => v.contains(&sec),
            F::Not(f) => !f.eval(sec, size),
            F::And(a, b) => a.eval(sec, size) && b.eval(sec, size),
            F::Or(a, b) => a.eval(sec, size) || b.eval(sec, size),
        }
    }
}

/// Seeded floats in -0.5..0.5 (a linear congruential generator with increment `inc`).
fn uniform(seed: u64, inc: u64) -> impl FnMut() -> f32 {
    let mut s = seed;
    move || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(inc);
        ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }
}

fn l2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn filtered_knn_returns_exactly_the_best_matching_objects(
        objs in proptest::collection::vec((0..4usize, 0..100i64, proptest::collection::vec(-1.0f32..1.0, 8)), 1..300),
        f in arb_filter(),
        q in proptest::collection::vec(-1.0f32..1.0, 8),
        k in 1..20usize,
        hora in any::<bool>(),
    ) {
        let mut shard = Shard::new(config(if hora { IndexKind::Hora } else { IndexKind::Hnsw }), 0).expect("shard");
        let batch = objs.iter().enumerate().map(|(i, (s, size, v))| Mutation::Upsert(Object {
            id: format!("o{i}"),
            properties: json!({"section": SECTIONS[*s], "size": size}).to_string(),
            vector: Some(v.clone()),
        })).collect();
        shard.apply(batch).expect("apply");
        let text = f.json().to_string();
        let parsed = Filter::parse(&text).expect("parse");
        let matching: Vec<usize> = (0..objs.len()).filter(|&i| f.eval(objs[i].0, objs[i].1)).collect();
        for (i, (s, size, _)) in objs.iter().enumerate() {
            let props = json!({"section": SECTIONS[*s], "size": size});
            prop_assert_eq!(parsed.matches(&format!("o{i}"), props.as_object().expect("object")), f.eval(*s, *size), "object {}", i);
        }
        let hits = shard.search(&SearchRequest { vectors: &q, k, ef: 0, filter: Some(&text), ..Default::default() }).expect("search").remove(0);
        // Small shards always use exact search under a filter, so the answer is exact.
        let mut want: Vec<(f32, usize)> = matching.iter().map(|&i| (l2(&objs[i].2, &q), i)).collect();
        want.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        prop_assert_eq!(hits.len(), k.min(matching.len()));
        for (h, w) in hits.iter().zip(&want) {
            prop_assert!((h.score - w.0.sqrt()).abs() < 1e-4, "{} vs {}", h.score, w.0.sqrt());
            let i: usize = h.id[1..].parse().expect("id");
            prop_assert!(f.eval(objs[i].0, objs[i].1));
        }
        let ids = shard.filter(&text, usize::MAX).expect("filter");
        let mut model: Vec<String> = matching.iter().map(|i| format!("o{i}")).collect();
        model.sort();
        prop_assert_eq!(ids, model);
    }

    #[test]
    fn traversal_matches_a_naive_breadth_first_search(
        edges in proptest::collection::vec((0..30u8, 0..30u8, 0..2u8), 0..120),
        start in 0..30u8,
        depth in 0..5u32,
        limit in 0..40u32,
        dir in 0..3u8,
    ) {
        let direction = [Direction::Out, Direction::In, Direction::Both][dir as usize];
        let mut g = Graph::default();
        for (a, b, l) in &edges {
            g.out.entry(*a).or_default().insert((format!("l{l}"), *b));
            g.inn.entry(*b).or_default().insert((format!("l{l}"), *a));
        }
        let req = TraverseRequest { start: node(start), label: Some("l0".into()), direction, depth, limit };
        let got = bfs(&mut g, &req).expect("the model graph never fails");
        // Model: plain BFS over label l0, collecting (node, depth).
        let mut seen = HashSet::from([start]);
        let mut order = vec![(start, 0u32)];
        let mut queue = VecDeque::from([(start, 0u32)]);
        while let Some((n, d)) = queue.pop_front() {
            if d >= depth { continue; }
            let mut next: Vec<u8> = Vec::new();
            if direction != Direction::In { next.extend(g.out.get(&n).into_iter().flatten().filter(|(l, _)| l == "l0").map(|x| x.1)); }
            if direction != Direction::Out { next.extend(g.inn.get(&n).into_iter().flatten().filter(|(l, _)| l == "l0").map(|x| x.1)); }
            for m in next {
                if seen.insert(m) { order.push((m, d + 1)); queue.push_back((m, d + 1)); }
            }
        }
        order.truncate(limit as usize + 1);
        let got: Vec<(String, u32)> = got.into_iter().map(|s| (s.node.id, s.depth)).collect();
        let want: Vec<(String, u32)> = order.into_iter().map(|(n, d)| (n.to_string(), d)).collect();
        prop_assert_eq!(got, want);
    }
}

fn node(i: u8) -> NodeRef {
    NodeRef {
        collection: "g".into(),
        id: i.to_string(),
    }
}

#[derive(Default)]
struct Graph {
    out: BTreeMap<u8, std::collections::BTreeSet<(String, u8)>>,
    inn: BTreeMap<u8, std::collections::BTreeSet<(String, u8)>>,
}

impl EdgeSource for Graph {
    fn edges(
        &mut self,
        n: &NodeRef,
        label: Option<&str>,
        d: Direction,
    ) -> Result<Vec<EdgeRef>, String> {
        let i: u8 = n.id.parse().expect("numeric id");
        let map = if d == Direction::Out {
            &self.out
        } else {
            &self.inn
        };
        Ok(map
            .get(&i)
            .into_iter()
            .flatten()
            .filter(|(l, _)| label.is_none_or(|x| x == l))
            .map(|(l, m)| EdgeRef {
                label: l.clone(),
                other: node(*m),
            })
            .collect())
    }
}

#[test]
fn updates_and_deletes_are_reflected_and_tombstones_get_compacted() {
    let mut shard = Shard::new(config(IndexKind::Hnsw), 0).expect("shard");
    let v = |x: f32| Some(vec![x, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    let up = |id: String, x: f32| {
        Mutation::Upsert(Object {
            id,
            properties: "{}".into(),
            vector: v(x),
        })
    };
    shard
        .apply((0..1000).map(|i| up(format!("p{i}"), i as f32)).collect())
        .expect("insert");
    // Move every object: 1000 tombstones, past the rebuild threshold.
    shard
        .apply(
            (0..1000)
                .map(|i| up(format!("p{i}"), -(i as f32)))
                .collect(),
        )
        .expect("update");
    shard
        .apply(vec![Mutation::Delete("p0".into())])
        .expect("delete");
    let st = shard.stats();
    assert_eq!((st.objects, st.vectors), (999, 999));
    assert!(
        st.deleted_slots < 300,
        "tombstones were compacted: {}",
        st.deleted_slots
    );
    let q = [-5.2f32, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    let hits = shard
        .search(&SearchRequest {
            vectors: &q,
            k: 2,
            ef: 32,
            filter: None,
            ..Default::default()
        })
        .expect("search")
        .remove(0);
    assert_eq!(
        hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
        vec!["p5", "p6"]
    );
    // An invalid batch changes nothing.
    let bad = vec![
        up("new".into(), 1.0),
        Mutation::Upsert(Object {
            id: "x".into(),
            properties: "[]".into(),
            vector: None,
        }),
    ];
    assert!(shard.apply(bad).is_err());
    assert_eq!(shard.stats().objects, 999);
    // Snapshot round trip.
    let bytes = shard.snapshot().expect("snapshot");
    let mut back = Shard::new(config(IndexKind::Hnsw), 0).expect("shard");
    assert_eq!(
        back.restore(&bytes, shard.export()).expect("restore"),
        Vec::<String>::new(),
        "filled in with the objects it was taken from, nothing differs"
    );
    assert_eq!(
        back.search(&SearchRequest {
            vectors: &q,
            k: 2,
            ef: 32,
            filter: None,
            ..Default::default()
        })
        .expect("search")
        .remove(0),
        hits
    );
    let mut damaged = bytes.clone();
    damaged[bytes.len() / 2] ^= 1;
    assert!(
        back.restore(&damaged, shard.export()).is_err(),
        "a flipped bit is caught by the checksum"
    );
}

#[test]
fn a_snapshot_of_a_restored_shard_is_the_same_bytes() {
    let mut shard = Shard::new(config(IndexKind::Hnsw), 0).expect("shard");
    let up = |id: String, v: Option<Vec<f32>>| {
        Mutation::Upsert(Object {
            id,
            properties: "{}".into(),
            vector: v,
        })
    };
    let v = |x: f32| Some(vec![x, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, -x]);
    // Objects with and without vectors, replaced, deleted, given a vector later.
    let mut batch: Vec<Mutation> = (0..200).map(|i| up(format!("o{i}"), v(i as f32))).collect();
    batch.extend((0..20).map(|i| up(format!("bare{i}"), None)));
    shard.apply(batch).expect("insert");
    shard
        .apply(vec![
            up("o3".into(), v(-3.0)),
            up("bare2".into(), v(0.5)),
            up("o9".into(), None),
            Mutation::Delete("o4".into()),
            Mutation::Delete("bare5".into()),
        ])
        .expect("update");
    let bytes = shard.snapshot().expect("snapshot");
    assert_eq!(bytes, shard.snapshot().expect("again"), "deterministic");
    let mut back = Shard::new(config(IndexKind::Hnsw), 0).expect("shard");
    assert_eq!(
        back.restore(&bytes, shard.export()).expect("restore"),
        Vec::<String>::new()
    );
    assert_eq!(back.export(), shard.export());
    assert_eq!(back.snapshot().expect("snapshot"), bytes);
}

#[test]
fn a_broad_filter_is_applied_inside_the_graph_search() {
    // 6,000 objects, half of them matching: more than the exact-search cut-off, so the graph
    // walk filters; every hit must match and the answer must be near-exact.
    let mut shard = Shard::new(config(IndexKind::Hnsw), 0).expect("shard");
    let mut rnd = uniform(7, 1442695040888963407);
    let rows: Vec<Vec<f32>> = (0..6000).map(|_| (0..8).map(|_| rnd()).collect()).collect();
    let batch = rows
        .iter()
        .enumerate()
        .map(|(i, v)| {
            Mutation::Upsert(Object {
                id: format!("o{i}"),
                properties: json!({"even": i % 2 == 0}).to_string(),
                vector: Some(v.clone()),
            })
        })
        .collect();
    shard.apply(batch).expect("apply");
    let mut found = 0;
    for _ in 0..20 {
        let q: Vec<f32> = (0..8).map(|_| rnd()).collect();
        let hits = shard
            .search(&SearchRequest {
                vectors: &q,
                k: 10,
                ef: 64,
                filter: Some(r#"{"even": true}"#),
                ..Default::default()
            })
            .expect("search")
            .remove(0);
        assert_eq!(hits.len(), 10);
        let mut want: Vec<(f32, usize)> = (0..6000)
            .step_by(2)
            .map(|i| (l2(&rows[i], &q), i))
            .collect();
        want.sort_by(|a, b| a.0.total_cmp(&b.0));
        let want: Vec<String> = want.iter().take(10).map(|x| format!("o{}", x.1)).collect();
        for h in &hits {
            let i: usize = h.id[1..].parse().expect("id");
            assert_eq!(i % 2, 0, "{} does not match the filter", h.id);
            found += usize::from(want.contains(&h.id));
        }
    }
    assert!(found >= 180, "filtered recall {found}/200");
}

#[test]
fn hora_with_cosine_finds_the_nearest_vectors() {
    let mut cfg = config(IndexKind::Hora);
    cfg.metric = Metric::Cosine;
    let mut shard = Shard::new(cfg.clone(), 0).expect("shard");
    let mut rnd = uniform(3, 1);
    let rows: Vec<Vec<f32>> = (0..400).map(|_| (0..8).map(|_| rnd()).collect()).collect();
    let batch = rows
        .iter()
        .enumerate()
        .map(|(i, v)| {
            Mutation::Upsert(Object {
                id: format!("o{i}"),
                properties: "{}".into(),
                vector: Some(v.clone()),
            })
        })
        .collect();
    shard.apply(batch).expect("apply");
    for i in [3usize, 77, 250] {
        let hit = shard
            .search(&SearchRequest {
                vectors: &rows[i],
                k: 1,
                ef: 64,
                filter: None,
                ..Default::default()
            })
            .expect("search")
            .remove(0);
        assert_eq!(hit[0].id, format!("o{i}"), "row {i} must find itself");
    }
    cfg.metric = Metric::Dot;
    assert!(
        Shard::new(cfg, 0).is_err(),
        "hora with dot product is refused"
    );
}

#[test]
fn filter_answers_in_id_order_up_to_the_limit() {
    use vektagraf_engine_core::id_order;
    let mut shard = Shard::new(config(IndexKind::Hnsw), 0).expect("shard");
    let mut ids: Vec<String> = (0..150).map(|i| i.to_string()).collect();
    ids.extend(["a", "b", "007", "x1", "10a", "18446744073709551616"].map(String::from));
    let batch = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            Mutation::Upsert(Object {
                id: id.clone(),
                properties: json!({"odd": i % 2 == 1}).to_string(),
                vector: None,
            })
        })
        .collect();
    shard.apply(batch).expect("apply");
    ids.sort_by(|a, b| id_order(a, b));
    assert_eq!(&ids[..4], ["0", "1", "2", "3"]);
    assert_eq!(
        &ids[149..],
        ["149", "007", "10a", "18446744073709551616", "a", "b", "x1"]
    );
    for limit in [0, 1, 5, 149, 150, 156, 1000] {
        let got = shard.filter("{}", limit).expect("filter");
        assert_eq!(got, ids[..limit.min(ids.len())], "limit {limit}");
    }
    let got = shard
        .filter(r#"{"$id": {"$gte": "98", "$lt": "a"}}"#, 1000)
        .expect_err("one operator per $id");
    assert!(
        got.to_string().contains("`$id` takes one operator"),
        "{got}"
    );
    let got = shard
        .filter(
            r#"{"$and": [{"$id": {"$gte": "98"}}, {"$id": {"$lt": "a"}}], "odd": false}"#,
            5,
        )
        .expect("filter");
    assert_eq!(got, ["98", "100", "102", "104", "106"]);
}

#[test]
fn exact_search_is_brute_force_and_can_filter_by_id() {
    let mut shard = Shard::new(config(IndexKind::Hnsw), 0).expect("shard");
    let mut rnd = uniform(11, 1442695040888963407);
    let rows: Vec<Vec<f32>> = (0..3000).map(|_| (0..8).map(|_| rnd()).collect()).collect();
    let batch = rows
        .iter()
        .enumerate()
        .map(|(i, v)| {
            Mutation::Upsert(Object {
                id: i.to_string(),
                properties: "{}".into(),
                vector: Some(v.clone()),
            })
        })
        .collect();
    shard.apply(batch).expect("apply");
    for _ in 0..10 {
        let q: Vec<f32> = (0..8).map(|_| rnd()).collect();
        let mut want: Vec<(f32, usize)> = (0..3000).map(|i| (l2(&rows[i], &q), i)).collect();
        want.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let want: Vec<String> = want.iter().take(20).map(|x| x.1.to_string()).collect();
        let hits = shard
            .search(&SearchRequest {
                vectors: &q,
                k: 20,
                ef: 20,
                exact: true,
                ..Default::default()
            })
            .expect("search")
            .remove(0);
        let got: Vec<String> = hits.into_iter().map(|h| h.id).collect();
        assert_eq!(got, want);
        let hits = shard
            .search(&SearchRequest {
                vectors: &q,
                k: 3,
                filter: Some(r#"{"$id": {"$in": ["5", "17", 2999, "nope"]}}"#),
                ..Default::default()
            })
            .expect("search")
            .remove(0);
        let mut got: Vec<String> = hits.into_iter().map(|h| h.id).collect();
        got.sort();
        assert_eq!(got, ["17", "2999", "5"]);
    }
}
