//! Key encodings (docs/storage.md). Each part is a big-endian u32 length and the bytes, so a
//! key's prefix of whole parts selects exactly the keys that start with those parts.

use crate::model::NodeKey;

pub fn part(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// `collection, id`: an object, and the prefix of its edges.
pub fn node(collection: &str, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + collection.len() + id.len());
    part(&mut k, collection);
    part(&mut k, id);
    k
}

pub fn collection_prefix(collection: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + collection.len());
    part(&mut k, collection);
    k
}

/// `near, label, far`: an edge as seen from `near` (the source in `edges_out`, the target in
/// `edges_in`).
pub fn edge(near: &NodeKey, label: &str, far: &NodeKey) -> Vec<u8> {
    let mut k = node(&near.collection, &near.id);
    part(&mut k, label);
    part(&mut k, &far.collection);
    part(&mut k, &far.id);
    k
}

/// `collection, shard`: an index snapshot.
pub fn shard(collection: &str, shard: u32) -> Vec<u8> {
    let mut k = collection_prefix(collection);
    k.extend_from_slice(&shard.to_be_bytes());
    k
}

/// `shard key, u32 BE n`: chunk `n` of that shard's index snapshot.
pub fn chunk(shard_key: &[u8], n: u32) -> Vec<u8> {
    let mut k = shard_key.to_vec();
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// Splits a key into its parts; `None` if it is not well formed.
pub fn parts(mut key: &[u8]) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    while !key.is_empty() {
        let (len, rest) = key.split_first_chunk::<4>()?;
        let len = u32::from_be_bytes(*len) as usize;
        let (s, rest) = (rest.get(..len)?, rest.get(len..)?);
        out.push(std::str::from_utf8(s).ok()?);
        key = rest;
    }
    Some(out)
}

/// The smallest key greater than every key that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![u8::MAX; prefix.len() + 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_keys_split_back_into_their_parts() {
        let k = edge(
            &NodeKey::new("pkgs", "a\0b"),
            "depends",
            &NodeKey::new("other", ""),
        );
        assert_eq!(
            parts(&k),
            Some(vec!["pkgs", "a\0b", "depends", "other", ""])
        );
        assert_eq!(parts(&k[..k.len() - 1]), None);
    }

    #[test]
    fn a_node_prefix_does_not_match_a_longer_id() {
        let a = node("c", "ab");
        let b = node("c", "abc");
        assert!(!b.starts_with(&a));
        assert!(prefix_end(&a) > a && prefix_end(&a) < b || !b.starts_with(&a));
    }
}
