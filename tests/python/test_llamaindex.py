"""LlamaIndex's Qdrant vector store (llama-index-vector-stores-qdrant), unmodified, against a
node through a qdrant_client.QdrantClient. No LLM, no embedding model, no network: the nodes
carry their own embeddings and queries pass vectors."""

from __future__ import annotations

import math
import random

import pytest
from llama_index.core import Settings
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)
from llama_index.vector_stores.qdrant import QdrantVectorStore

DIM = 16

# Nothing may load a model: no LLM, no default embedding.
Settings.llm = None
Settings.embed_model = None


def unit(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def make_nodes(rng: random.Random):
    nodes = []
    for doc in range(4):
        for part in range(5):
            i = doc * 5 + part
            nodes.append(TextNode(
                text=f"document {doc} part {part}",
                id_=f"00000000-0000-4000-8000-{i:012d}",
                embedding=[rng.gauss(0, 1) for _ in range(DIM)],
                metadata={"doc": doc, "part": part, "kind": ["a", "b"][part % 2], "author": f"writer{doc % 2}"},
                relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=f"doc-{doc}")},
            ))
    return nodes


def cos(a, b):
    return sum(x * y for x, y in zip(unit(a), unit(b)))


def test_store_add_query_delete(node, collection_name):
    rng = random.Random(5)
    client = node.client()
    store = QdrantVectorStore(collection_name=collection_name, client=client)
    nodes = make_nodes(rng)
    ids = store.add(nodes)
    assert ids == [n.node_id for n in nodes]
    assert client.count(collection_name).count == 20
    info = client.get_collection(collection_name)
    assert info.config.params.vectors.size == DIM
    assert "doc_id" in info.payload_schema  # LlamaIndex indexes the ref doc id

    # each node's own embedding finds it first
    for n in nodes[::3]:
        res = store.query(VectorStoreQuery(query_embedding=n.embedding, similarity_top_k=3))
        assert res.ids[0] == n.node_id
        assert res.similarities[0] == pytest.approx(1.0, abs=1e-4)
        assert res.nodes[0].get_content() == n.text
        assert res.nodes[0].metadata["doc"] == n.metadata["doc"]
        assert res.nodes[0].ref_doc_id == n.ref_doc_id

    q = [rng.gauss(0, 1) for _ in range(DIM)]
    truth = sorted(nodes, key=lambda n: -cos(n.embedding, q))
    res = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=5))
    assert res.ids == [n.node_id for n in truth[:5]]
    assert res.similarities == pytest.approx([cos(n.embedding, q) for n in truth[:5]], abs=1e-4)

    # metadata filters
    only_b = MetadataFilters(filters=[MetadataFilter(key="kind", value="b")])
    res = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=20, filters=only_b))
    assert res.ids == [n.node_id for n in truth if n.metadata["kind"] == "b"]
    both = MetadataFilters(filters=[
        MetadataFilter(key="author", value="writer1"),
        MetadataFilter(key="part", value=2, operator=FilterOperator.GTE),
    ], condition=FilterCondition.AND)
    res = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=20, filters=both))
    assert res.ids == [n.node_id for n in truth if n.metadata["author"] == "writer1" and n.metadata["part"] >= 2]
    either = MetadataFilters(filters=[
        MetadataFilter(key="doc", value=0),
        MetadataFilter(key="part", value=[3, 4], operator=FilterOperator.IN),
    ], condition=FilterCondition.OR)
    res = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=20, filters=either))
    assert res.ids == [n.node_id for n in truth if n.metadata["doc"] == 0 or n.metadata["part"] in (3, 4)]
    res = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=20,
                                       doc_ids=["doc-1", "doc-3"]))
    assert res.ids == [n.node_id for n in truth if n.ref_doc_id in ("doc-1", "doc-3")]

    # delete by ref_doc_id
    store.delete("doc-2")
    assert client.count(collection_name).count == 15
    res = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=20))
    assert res.ids == [n.node_id for n in truth if n.ref_doc_id != "doc-2"]

    # a second store over the same collection finds the form it was created in
    again = QdrantVectorStore(collection_name=collection_name, client=node.client())
    res = again.query(VectorStoreQuery(query_embedding=nodes[0].embedding, similarity_top_k=1))
    assert res.ids == [nodes[0].node_id]
    more = make_nodes(random.Random(6))[:2]
    for n in more:
        n.id_ = n.id_.replace("4000-8000", "4000-9000")
    again.add(more)
    assert client.count(collection_name).count == 17

    store.clear()
    assert not client.collection_exists(collection_name)


def test_existing_collection_is_reused(node, collection_name):
    """LlamaIndex creates the collection when it is missing and, when it already exists, relies
    on the error saying "already exists"."""
    rng = random.Random(8)
    client = node.client()
    first = QdrantVectorStore(collection_name=collection_name, client=client)
    second = QdrantVectorStore(collection_name=collection_name, client=node.client())
    nodes = make_nodes(rng)
    first.add(nodes[:5])
    second.add(nodes[5:10])  # second still believes the collection is missing
    assert client.count(collection_name).count == 10
    res = second.query(VectorStoreQuery(query_embedding=nodes[7].embedding, similarity_top_k=1))
    assert res.ids == [nodes[7].node_id]
    client.delete_collection(collection_name)
