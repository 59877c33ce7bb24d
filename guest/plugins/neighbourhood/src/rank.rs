//! The ranking, apart from the bindings so it can be tested natively.
//!
//! Dependencies are ranked by how many hits reach them (more first), then by the best hit that
//! reaches them (its position in the k-NN answer, so it works for distances and similarities
//! alike), then by fewest steps, then by (collection, id). The order is fully determined by
//! the input.

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    pub id: String,
    pub score: f32,
}

/// One object reached from a hit.
pub struct Reached {
    pub collection: String,
    pub id: String,
    pub depth: u32,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Dependency {
    pub collection: String,
    pub id: String,
    pub dependents: usize,
    pub depth: u32,
    pub best_hit: String,
    pub best_score: f32,
    pub needed_by: Vec<String>,
}

/// What is known about one reached object while ranking.
struct Seen {
    /// The positions of the hits that reach it, in hit order (so the first is the best).
    hits: Vec<usize>,
    /// The fewest steps from any of them.
    depth: u32,
}

/// `reached[i]`: the objects reached from `hits[i]`. Returns the best `limit`, best first.
pub fn rank(hits: &[Hit], reached: Vec<Vec<Reached>>, limit: usize) -> Vec<Dependency> {
    let mut seen: BTreeMap<(String, String), Seen> = BTreeMap::new();
    for (i, objects) in reached.into_iter().enumerate() {
        for r in objects {
            let s = seen.entry((r.collection, r.id)).or_insert(Seen {
                hits: Vec::new(),
                depth: r.depth,
            });
            if s.hits.last() != Some(&i) {
                s.hits.push(i);
            }
            s.depth = s.depth.min(r.depth);
        }
    }
    let mut ranked: Vec<_> = seen.into_iter().collect();
    ranked.sort_by(|(key_a, a), (key_b, b)| {
        b.hits
            .len()
            .cmp(&a.hits.len())
            .then(a.hits[0].cmp(&b.hits[0]))
            .then(a.depth.cmp(&b.depth))
            .then_with(|| key_a.cmp(key_b))
    });
    ranked
        .into_iter()
        .take(limit)
        .map(|((collection, id), s)| Dependency {
            collection,
            id,
            dependents: s.hits.len(),
            depth: s.depth,
            best_hit: hits[s.hits[0]].id.clone(),
            best_score: hits[s.hits[0]].score,
            needed_by: s.hits.iter().map(|&p| hits[p].id.clone()).collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: &str, score: f32) -> Hit {
        Hit {
            id: id.into(),
            score,
        }
    }

    fn to(id: &str, depth: u32) -> Reached {
        Reached {
            collection: "p".into(),
            id: id.into(),
            depth,
        }
    }

    #[test]
    fn shared_dependencies_come_first() {
        let hits = [hit("curl", 0.9), hit("wget", 0.8), hit("git", 0.7)];
        let reached = vec![
            vec![to("libssl", 1), to("zlib", 1)],
            vec![to("libssl", 1)],
            vec![to("libssl", 1), to("zlib", 1), to("perl", 1)],
        ];
        let r = rank(&hits, reached, 10);
        let ids: Vec<&str> = r.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["libssl", "zlib", "perl"]);
        assert_eq!(r[0].dependents, 3);
        assert_eq!(r[0].needed_by, ["curl", "wget", "git"]);
        assert_eq!(r[1].needed_by, ["curl", "git"]);
        assert_eq!((r[2].best_hit.as_str(), r[2].best_score), ("git", 0.7));
    }

    #[test]
    fn ties_go_to_the_better_hit_then_fewer_steps_then_id() {
        let hits = [hit("a", 0.9), hit("b", 0.8)];
        let reached = vec![vec![to("y", 2), to("x", 2), to("w", 1)], vec![to("v", 1)]];
        let r = rank(&hits, reached, 3);
        let ids: Vec<&str> = r.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["w", "x", "y"]);
    }

    #[test]
    fn one_hit_counts_once_and_keeps_the_fewest_steps() {
        let hits = [hit("a", 0.9)];
        let r = rank(&hits, vec![vec![to("x", 2), to("x", 1)]], 10);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].dependents, r[0].depth), (1, 1));
    }
}
