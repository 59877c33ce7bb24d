"""LangChain's `QdrantVectorStore` (langchain-qdrant), unmodified, against a node, with a
deterministic fake embedding (no model, no network)."""

from __future__ import annotations

import uuid

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_qdrant import QdrantVectorStore
from qdrant_client import models

TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "vector databases store embeddings",
    "graphs connect nodes with edges",
    "rust is a systems programming language",
    "edge computing runs close to the user",
    "qdrant speaks a REST dialect",
    "langchain chains language model calls",
    "a fox is a small omnivorous mammal",
]
TOPICS = ["animals", "databases", "databases", "languages", "computing", "databases", "languages", "animals"]


@pytest.fixture
def embedding():
    return DeterministicFakeEmbedding(size=32)


def test_vector_store(node, embedding, collection_name):
    ids = [str(uuid.uuid4()) for _ in TEXTS]
    metadatas = [{"topic": t, "n": i} for i, t in enumerate(TOPICS)]
    store = QdrantVectorStore.from_texts(
        TEXTS, embedding, metadatas=metadatas, ids=ids,
        url=node.url, port=None, api_key=node.admin_token, collection_name=collection_name,
    )
    client = store.client
    assert client.count(collection_name).count == len(TEXTS)
    # LangChain creates the named form with the empty name
    vectors = client.get_collection(collection_name).config.params.vectors
    assert set(vectors) == {""} and vectors[""].size == 32

    # each text finds itself first, with a cosine score of 1
    for i, text in enumerate(TEXTS):
        [(doc, score)] = store.similarity_search_with_score(text, k=1)
        assert doc.page_content == text
        assert doc.metadata["_id"] == ids[i]
        assert doc.metadata["topic"] == TOPICS[i] and doc.metadata["n"] == i
        assert score == pytest.approx(1.0, abs=1e-4)

    docs = store.similarity_search(TEXTS[1], k=4)
    assert len(docs) == 4 and docs[0].page_content == TEXTS[1]
    scored = store.similarity_search_with_score(TEXTS[3], k=len(TEXTS))
    scores = [s for _, s in scored]
    assert scores == sorted(scores, reverse=True) and len(scored) == len(TEXTS)

    # a metadata filter
    only_db = models.Filter(must=[models.FieldCondition(key="metadata.topic", match=models.MatchValue(value="databases"))])
    docs = store.similarity_search(TEXTS[0], k=10, filter=only_db)
    assert sorted(d.page_content for d in docs) == sorted(t for t, tp in zip(TEXTS, TOPICS) if tp == "databases")
    docs = store.similarity_search(TEXTS[5], k=1, filter=only_db)
    assert docs[0].page_content == TEXTS[5]
    docs = store.similarity_search(TEXTS[0], k=10, filter=models.Filter(must=[
        models.FieldCondition(key="metadata.n", range=models.Range(gte=2, lt=5))]))
    assert sorted(d.metadata["n"] for d in docs) == [2, 3, 4]

    # get_by_ids, delete
    got = store.get_by_ids([ids[2], ids[4]])
    assert sorted(d.page_content for d in got) == sorted([TEXTS[2], TEXTS[4]])
    assert store.delete([ids[0], ids[7]])
    assert client.count(collection_name).count == len(TEXTS) - 2
    docs = store.similarity_search(TEXTS[0], k=10)
    assert TEXTS[0] not in [d.page_content for d in docs] and len(docs) == len(TEXTS) - 2
    animals = models.Filter(must=[models.FieldCondition(key="metadata.topic", match=models.MatchValue(value="animals"))])
    assert store.similarity_search(TEXTS[0], k=10, filter=animals) == []

    # add_texts with ids langchain generates (uuid4().hex), and Documents
    added = store.add_texts(["one more text", "and another"], metadatas=[{"topic": "x"}, {"topic": "y"}])
    assert len(added) == 2
    added += store.add_documents([Document(page_content="a document", metadata={"topic": "z"})])
    assert client.count(collection_name).count == len(TEXTS) - 2 + 3
    [doc] = store.similarity_search("a document", k=1)
    assert doc.page_content == "a document" and doc.metadata["_id"] == str(uuid.UUID(str(added[2])))
    client.delete_collection(collection_name)


def test_collection_reuse(node, embedding, collection_name):
    first = QdrantVectorStore.from_texts(
        TEXTS[:3], embedding, url=node.url, port=None, api_key=node.admin_token,
        collection_name=collection_name,
    )
    # again, without force_recreate: the collection is kept (and checked) and texts are added
    second = QdrantVectorStore.from_texts(
        TEXTS[3:], embedding, url=node.url, port=None, api_key=node.admin_token,
        collection_name=collection_name, force_recreate=False,
    )
    assert second.client.count(collection_name).count == len(TEXTS)
    [doc] = second.similarity_search(TEXTS[1], k=1)
    assert doc.page_content == TEXTS[1]

    # from_existing_collection, and a store over a QdrantClient of one's own
    existing = QdrantVectorStore.from_existing_collection(
        collection_name, embedding, url=node.url, port=None, api_key=node.admin_token)
    assert existing.similarity_search(TEXTS[6], k=1)[0].page_content == TEXTS[6]
    own = QdrantVectorStore(client=node.client(), collection_name=collection_name, embedding=embedding)
    assert own.similarity_search(TEXTS[4], k=1)[0].page_content == TEXTS[4]

    # a wrong embedding size is caught against the collection's config
    with pytest.raises(Exception, match="dimension|size"):
        QdrantVectorStore(client=node.client(), collection_name=collection_name,
                          embedding=DeterministicFakeEmbedding(size=16))

    # force_recreate drops what was there
    third = QdrantVectorStore.from_texts(
        TEXTS[:2], embedding, url=node.url, port=None, api_key=node.admin_token,
        collection_name=collection_name, force_recreate=True,
    )
    assert third.client.count(collection_name).count == 2
    first.client.delete_collection(collection_name)


def test_read_only_token(node, embedding, collection_name):
    QdrantVectorStore.from_texts(TEXTS, embedding, url=node.url, port=None, api_key=node.admin_token,
                                 collection_name=collection_name)
    reader = QdrantVectorStore.from_existing_collection(
        collection_name, embedding, url=node.url, port=None, api_key=node.read_token)
    assert reader.similarity_search(TEXTS[2], k=1)[0].page_content == TEXTS[2]
    with pytest.raises(Exception, match="403"):
        reader.add_texts(["not allowed"])
    node.client().delete_collection(collection_name)
