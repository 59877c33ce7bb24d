//! The scoring, apart from the bindings so it can be tested natively.
//!
//! `score = base + weight * normalised(value)`, where `base` is the search's similarity
//! (its negated distance for euclidean collections, so that higher is always better) and
//! `normalised` maps the candidates' values of the property onto 0..=1 (min-max; when every
//! candidate that has the property has the same value, that value counts as 1). Candidates
//! without the property, or with a non-numeric value, keep `score = base`. Ties go to the
//! smaller id, so the order is the same on every node.

use serde::Serialize;

pub struct Candidate {
    pub id: String,
    /// The search's score.
    pub similarity: f32,
    /// The property's value, when it is a number.
    pub value: Option<f64>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Ranked {
    pub id: String,
    /// Computed in f64, kept as f32 like the similarity (so it prints as `0.95`, not
    /// `0.9500000238418579`).
    pub score: f32,
    pub similarity: f32,
}

/// The number at `path` (dots reach into nested objects), if there is one.
pub fn numeric(properties: &serde_json::Value, path: &str) -> Option<f64> {
    path.split('.')
        .try_fold(properties, |v, key| v.get(key))?
        .as_f64()
}

/// Re-scores the candidates and returns the best `k`, best first.
pub fn rerank(
    candidates: Vec<Candidate>,
    higher_is_better: bool,
    weight: f64,
    k: usize,
) -> Vec<Ranked> {
    let values = candidates.iter().filter_map(|c| c.value);
    let min = values.clone().fold(f64::INFINITY, f64::min);
    let max = values.fold(f64::NEG_INFINITY, f64::max);
    let normalised = |v: f64| {
        if max > min {
            (v - min) / (max - min)
        } else {
            1.0
        }
    };

    let mut ranked: Vec<Ranked> = candidates
        .into_iter()
        .map(|c| {
            let base = if higher_is_better {
                f64::from(c.similarity)
            } else {
                -f64::from(c.similarity)
            };
            Ranked {
                score: (base + c.value.map_or(0.0, |v| weight * normalised(v))) as f32,
                id: c.id,
                similarity: c.similarity,
            }
        })
        .collect();
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
    ranked.truncate(k);
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn c(id: &str, similarity: f32, value: Option<f64>) -> Candidate {
        Candidate {
            id: id.into(),
            similarity,
            value,
        }
    }

    fn ids(r: &[Ranked]) -> Vec<&str> {
        r.iter().map(|r| r.id.as_str()).collect()
    }

    #[test]
    fn popular_candidates_move_up() {
        let r = rerank(
            vec![
                c("a", 0.90, Some(0.0)),
                c("b", 0.85, Some(100.0)),
                c("c", 0.80, Some(50.0)),
            ],
            true,
            0.1,
            10,
        );
        assert_eq!(ids(&r), ["b", "a", "c"]);
        assert!((r[0].score - 0.95).abs() < 1e-6);
        assert_eq!(r[0].similarity, 0.85);
        assert!((r[1].score - 0.90).abs() < 1e-6);
        assert!((r[2].score - 0.85).abs() < 1e-6);
    }

    #[test]
    fn missing_values_keep_their_score_and_k_cuts() {
        let r = rerank(
            vec![c("a", 0.9, None), c("b", 0.5, Some(3.0)), c("c", 0.1, None)],
            true,
            0.1,
            2,
        );
        // b is the only one with the property: it counts as the maximum.
        assert_eq!(ids(&r), ["a", "b"]);
        assert!((r[0].score - 0.9).abs() < 1e-6);
        assert!((r[1].score - 0.6).abs() < 1e-6);
    }

    #[test]
    fn distances_are_negated() {
        let r = rerank(
            vec![c("far", 2.0, None), c("near", 1.0, None)],
            false,
            0.1,
            10,
        );
        assert_eq!(ids(&r), ["near", "far"]);
        assert!((r[0].score + 1.0).abs() < 1e-6);
    }

    #[test]
    fn ties_go_to_the_smaller_id() {
        let r = rerank(vec![c("b", 0.5, None), c("a", 0.5, None)], true, 0.1, 10);
        assert_eq!(ids(&r), ["a", "b"]);
    }

    #[test]
    fn numeric_reaches_into_objects() {
        let p = json!({"popularity": 7, "meta": {"votes": 2.5}, "name": "x"});
        assert_eq!(numeric(&p, "popularity"), Some(7.0));
        assert_eq!(numeric(&p, "meta.votes"), Some(2.5));
        assert_eq!(numeric(&p, "name"), None);
        assert_eq!(numeric(&p, "absent"), None);
        assert_eq!(numeric(&p, "meta.absent"), None);
    }
}
