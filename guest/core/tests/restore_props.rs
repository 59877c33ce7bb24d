//! A restore keeps each object's stored properties as text and parses them when a filter first
//! needs them: filters, filtered searches, stats and export answer as before the restore, and
//! properties that are not a JSON object still make the restore fail.

use vektagraf_engine_core::shard::{SearchRequest, Shard};
use vektagraf_engine_core::{CollectionConfig, IndexKind, Metric, Mutation, Object};

const DIM: usize = 4;

fn config(metric: Metric) -> CollectionConfig {
    CollectionConfig {
        name: "props".into(),
        dimension: DIM as u32,
        metric,
        index: IndexKind::Hnsw,
        m: 4,
        ef_construction: 16,
        ef_search: 16,
        shards: 1,
    }
}

fn objects() -> Vec<Object> {
    (0..200)
        .map(|i| Object {
            id: format!("o{i}"),
            properties: format!(
                r#"{{"n": {i}, "tag": "t{}", "nested": {{"even": {}}}}}"#,
                i % 3,
                i % 2 == 0
            ),
            vector: (i % 7 != 0).then(|| {
                (0..DIM)
                    .map(|d| ((i * 31 + d * 17) % 23) as f32 - 11.5)
                    .collect()
            }),
        })
        .collect()
}

fn built(metric: Metric) -> Shard {
    let mut shard = Shard::new(config(metric), 0).expect("config");
    shard
        .apply(objects().into_iter().map(Mutation::Upsert).collect())
        .expect("upserts");
    shard
}

fn restored(from: &Shard, metric: Metric) -> Shard {
    let bytes = from.snapshot().expect("snapshot");
    let mut shard = Shard::new(config(metric), 0).expect("config");
    let differ = shard.restore(&bytes, from.export()).expect("restore");
    assert!(differ.is_empty(), "{differ:?}");
    shard
}

fn search(shard: &mut Shard, filter: Option<&str>) -> Vec<Vec<(String, u32)>> {
    let q = [1.0, -2.0, 0.5, 3.0];
    shard
        .search(&SearchRequest {
            vectors: &q,
            k: 10,
            ef: 32,
            filter,
            exact: false,
        })
        .expect("search")
        .into_iter()
        .map(|row| row.into_iter().map(|h| (h.id, h.score.to_bits())).collect())
        .collect()
}

#[test]
fn a_restored_shard_answers_filters_as_the_original() {
    for metric in [Metric::Cosine, Metric::Dot, Metric::Euclidean] {
        let mut original = built(metric);
        let mut copy = restored(&original, metric);
        // Unfiltered first: the properties are still text then.
        assert_eq!(search(&mut copy, None), search(&mut original, None));
        assert_eq!(copy.export(), original.export());
        for f in [
            r#"{"tag": "t1"}"#,
            r#"{"n": {"$gte": 150}}"#,
            r#"{"nested.even": true}"#,
            "{}",
        ] {
            assert_eq!(
                copy.filter(f, usize::MAX).expect("filter"),
                original.filter(f, usize::MAX).expect("filter"),
                "{f}"
            );
            assert_eq!(search(&mut copy, Some(f)), search(&mut original, Some(f)));
        }
        assert_eq!(copy.export(), original.export());
        assert_eq!(copy.stats().objects, original.stats().objects);
    }
}

#[test]
fn a_filtered_search_first_parses_the_restored_properties() {
    let mut original = built(Metric::Dot);
    let mut copy = restored(&original, Metric::Dot);
    let f = Some(r#"{"tag": "t2"}"#);
    assert_eq!(search(&mut copy, f), search(&mut original, f));
}

#[test]
fn properties_that_are_not_a_json_object_fail_the_restore() {
    let original = built(Metric::Euclidean);
    let bytes = original.snapshot().expect("snapshot");
    for bad in ["[1, 2]", "\"text\"", "{\"a\": ", "{\"a\": 1} x", "", "  7"] {
        let mut stored = original.export();
        stored[5].properties = bad.into();
        let mut copy = Shard::new(config(Metric::Euclidean), 0).expect("config");
        assert!(copy.restore(&bytes, stored).is_err(), "`{bad}` accepted");
        // The shard is left as it was (empty), and usable.
        assert_eq!(copy.stats().objects, 0);
        assert_eq!(copy.filter("{}", 10).expect("filter"), Vec::<String>::new());
    }
}

#[test]
fn an_upsert_after_a_restore_replaces_text_properties() {
    let mut original = built(Metric::Dot);
    let mut copy = restored(&original, Metric::Dot);
    copy.apply(vec![Mutation::Upsert(Object {
        id: "o3".into(),
        properties: r#"{"tag": "new"}"#.into(),
        vector: None,
    })])
    .expect("upsert");
    assert_eq!(
        copy.filter(r#"{"tag": "new"}"#, 10).expect("filter"),
        vec!["o3".to_string()]
    );
    assert_eq!(
        copy.filter(r#"{"tag": "t0"}"#, usize::MAX)
            .expect("filter")
            .len(),
        original
            .filter(r#"{"tag": "t0"}"#, usize::MAX)
            .expect("filter")
            .len()
            - 1
    );
}
