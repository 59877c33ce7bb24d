//! Breadth-first traversal. Edges live in the host's storage, so the engine reads them through
//! an [`EdgeSource`] (a WIT import in the component, a map in tests).

use std::collections::{HashSet, VecDeque};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeRef {
    pub collection: String,
    pub id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Out,
    In,
    Both,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeRef {
    pub label: String,
    pub other: NodeRef,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub node: NodeRef,
    pub depth: u32,
    /// The node this one was reached from, with the label followed.
    pub via: Option<EdgeRef>,
}

#[derive(Debug, Clone)]
pub struct TraverseRequest {
    pub start: NodeRef,
    pub label: Option<String>,
    pub direction: Direction,
    pub depth: u32,
    pub limit: u32,
}

pub trait EdgeSource {
    /// Edges of `node` in one direction (`In` or `Out`), in a stable order; `Err` when they
    /// cannot be read (the traversal then fails as a whole).
    fn edges(
        &mut self,
        node: &NodeRef,
        label: Option<&str>,
        direction: Direction,
    ) -> Result<Vec<EdgeRef>, String>;
}

/// Visits nodes breadth-first up to `depth` hops, each once. Returns the start (depth 0) and at
/// most `limit` further nodes, in visiting order, or the first error reading edges.
pub fn bfs(source: &mut dyn EdgeSource, req: &TraverseRequest) -> Result<Vec<Step>, String> {
    let mut seen: HashSet<NodeRef> = HashSet::from([req.start.clone()]);
    let mut out = vec![Step {
        node: req.start.clone(),
        depth: 0,
        via: None,
    }];
    let mut queue = VecDeque::from([(req.start.clone(), 0u32)]);
    let dirs: &[Direction] = match req.direction {
        Direction::Both => &[Direction::Out, Direction::In],
        Direction::Out => &[Direction::Out],
        Direction::In => &[Direction::In],
    };
    while let Some((node, depth)) = queue.pop_front() {
        if depth >= req.depth {
            continue;
        }
        for &dir in dirs {
            for e in source.edges(&node, req.label.as_deref(), dir)? {
                if out.len() > req.limit as usize {
                    return Ok(out);
                }
                if seen.insert(e.other.clone()) {
                    out.push(Step {
                        node: e.other.clone(),
                        depth: depth + 1,
                        via: Some(EdgeRef {
                            label: e.label,
                            other: node.clone(),
                        }),
                    });
                    queue.push_back((e.other, depth + 1));
                }
            }
        }
    }
    out.truncate(req.limit as usize + 1);
    Ok(out)
}
