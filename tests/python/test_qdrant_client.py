"""qdrant-client (REST), unmodified, against a Vektagraf node: every operation of issue 13.

Filters are checked against answers computed here in plain Python over the same points.
"""

from __future__ import annotations

import math
import random
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

DIM = 4


def vec(rng: random.Random, dim: int = DIM) -> list[float]:
    return [rng.uniform(-1, 1) for _ in range(dim)]


def norm(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def make(client: QdrantClient, name: str, distance=models.Distance.COSINE, dim: int = DIM, **kw):
    assert client.create_collection(name, vectors_config=models.VectorParams(size=dim, distance=distance), **kw)


def status_of(excinfo) -> int:
    return excinfo.value.status_code


def error_text(excinfo) -> str:
    return excinfo.value.content.decode(errors="replace")


# ---------------------------------------------------------------------------------------------
# Collections


def test_collections_lifecycle(client, collection_name):
    name = collection_name
    assert not client.collection_exists(name)
    make(client, name, hnsw_config=models.HnswConfigDiff(m=12, ef_construct=64), shard_number=2)
    assert client.collection_exists(name)
    assert name in [c.name for c in client.get_collections().collections]

    info = client.get_collection(name)
    assert info.points_count == 0
    assert isinstance(info.config.params.vectors, models.VectorParams)
    assert info.config.params.vectors.size == DIM
    assert info.config.params.vectors.distance == models.Distance.COSINE
    assert info.config.hnsw_config.m == 12
    assert info.config.hnsw_config.ef_construct == 64
    assert info.config.params.shard_number == 2

    client.upsert(name, [models.PointStruct(id=i, vector=[1.0, i, 0, 0]) for i in range(5)])
    assert client.get_collection(name).points_count == 5

    with pytest.raises(UnexpectedResponse) as e:
        make(client, name)
    assert "already exists" in error_text(e)
    assert status_of(e) in (400, 409)

    assert client.delete_collection(name)
    assert not client.collection_exists(name)
    assert name not in [c.name for c in client.get_collections().collections]


def test_named_empty_vector_form(client, collection_name):
    name = collection_name
    assert client.create_collection(
        name, vectors_config={"": models.VectorParams(size=3, distance=models.Distance.DOT)}
    )
    vectors = client.get_collection(name).config.params.vectors
    assert isinstance(vectors, dict) and set(vectors) == {""}
    assert vectors[""].size == 3 and vectors[""].distance == models.Distance.DOT
    client.upsert(name, [
        models.PointStruct(id=1, vector={"": [1.0, 2.0, 3.0]}, payload={"a": 1}),
        models.PointStruct(id=2, vector={"": [0.0, 0.0, 1.0]}, payload={"a": 2}),
    ])
    [rec] = client.retrieve(name, [1], with_vectors=True)
    assert rec.vector == {"": [1.0, 2.0, 3.0]}  # Dot: stored as given
    hits = client.query_points(name, query=[1.0, 0.0, 0.0], using="", limit=2).points
    assert [h.id for h in hits] == [1, 2]
    assert hits[0].score == pytest.approx(1.0)
    client.delete_collection(name)


# ---------------------------------------------------------------------------------------------
# Points: upsert, ids, retrieve, delete


def test_upsert_ids_and_retrieve(client, collection_name):
    name = collection_name
    make(client, name)
    u1 = str(uuid.uuid4())
    u2 = uuid.uuid4()
    client.upsert(name, [
        models.PointStruct(id=1, vector=[3.0, 4.0, 0.0, 0.0], payload={"k": "int", "n": 1, "o": {"x": 1, "y": 2}}),
        models.PointStruct(id=u1, vector=[0.0, 0.0, 2.0, 0.0], payload={"k": "uuid"}),
        models.PointStruct(id=u2.hex, vector=[0.0, 1.0, 0.0, 0.0], payload={"k": "hex"}),
    ])
    client.upsert(name, models.Batch(
        ids=[10, 11],
        vectors=[[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 5.0]],
        payloads=[{"k": "batch", "n": 10}, {"k": "batch", "n": 11}],
    ), wait=False, ordering=models.WriteOrdering.STRONG)
    assert client.count(name).count == 5

    recs = client.retrieve(name, [1, u1, u2.hex, 10, 11, 999], with_vectors=True)
    by_id = {r.id: r for r in recs}
    assert set(by_id) == {1, u1, str(u2), 10, 11}  # hex comes back hyphenated; 999 is missing
    assert by_id[1].payload == {"k": "int", "n": 1, "o": {"x": 1, "y": 2}}
    assert by_id[1].vector == pytest.approx([0.6, 0.8, 0.0, 0.0], abs=1e-6)  # cosine: normalised
    assert by_id[u1].vector == pytest.approx([0.0, 0.0, 1.0, 0.0])
    assert by_id[11].vector == pytest.approx([0.0, 0.0, 0.0, 1.0])
    assert by_id[10].payload == {"k": "batch", "n": 10}

    # the same uuid, either spelling, names the same point
    assert [r.id for r in client.retrieve(name, [str(u2)])] == [str(u2)]
    assert [r.id for r in client.retrieve(name, [uuid.UUID(u1).hex])] == [u1]

    [r] = client.retrieve(name, [1], with_payload=False)
    assert r.payload is None and r.vector is None
    [r] = client.retrieve(name, [1], with_payload=["k", "o.y"])
    assert r.payload == {"k": "int", "o": {"y": 2}}
    [r] = client.retrieve(name, [1], with_payload=models.PayloadSelectorExclude(exclude=["o"]))
    assert r.payload == {"k": "int", "n": 1}

    # upsert replaces the whole point
    client.upsert(name, [models.PointStruct(id=1, vector=[0.0, 1.0, 0.0, 0.0], payload={"new": True})])
    [r] = client.retrieve(name, [1], with_vectors=True)
    assert r.payload == {"new": True}
    assert r.vector == pytest.approx([0.0, 1.0, 0.0, 0.0])
    assert client.count(name).count == 5

    # delete by ids, then by filter
    client.delete(name, points_selector=models.PointIdsList(points=[u1, u2.hex]))
    assert {r.id for r in client.scroll(name, limit=100)[0]} == {1, 10, 11}
    client.delete(name, points_selector=models.FilterSelector(filter=models.Filter(
        must=[models.FieldCondition(key="k", match=models.MatchValue(value="batch"))])))
    assert [r.id for r in client.scroll(name, limit=100)[0]] == [1]
    assert client.get_collection(name).points_count == 1
    client.delete_collection(name)


def test_scroll_pagination(client, collection_name):
    name = collection_name
    make(client, name, distance=models.Distance.EUCLID)
    rng = random.Random(7)
    ids = rng.sample(range(1, 10_000), 40)
    uuids = [str(uuid.uuid4()) for _ in range(12)]
    client.upsert(name, [models.PointStruct(id=i, vector=vec(rng), payload={"even": i % 2 == 0})
                         for i in ids])
    client.upsert(name, [models.PointStruct(id=u, vector=vec(rng), payload={"even": False}) for u in uuids])
    # Qdrant's order: integer ids by value, then UUIDs
    expected = sorted(ids) + sorted(uuids)

    def pages(flt=None):
        seen, offset, n = [], None, 0
        while True:
            recs, offset = client.scroll(name, scroll_filter=flt, limit=7, offset=offset)
            assert len(recs) <= 7
            seen += [r.id for r in recs]
            n += 1
            assert n < 100
            if offset is None:
                return seen

    assert pages() == expected
    even = models.Filter(must=[models.FieldCondition(key="even", match=models.MatchValue(value=True))])
    assert pages(even) == sorted(i for i in ids if i % 2 == 0)
    # an offset starts at that point; one that is not a point, at the next one
    recs, _ = client.scroll(name, limit=3, offset=expected[5])
    assert [r.id for r in recs] == expected[5:8]
    gap = expected[4] + 1
    assert gap not in ids and gap < expected[5]
    recs, _ = client.scroll(name, limit=3, offset=gap)
    assert [r.id for r in recs] == expected[5:8]
    recs, nxt = client.scroll(name, limit=5, offset=sorted(uuids)[2])
    assert [r.id for r in recs] == sorted(uuids)[2:7] and nxt == sorted(uuids)[7]
    recs, nxt = client.scroll(name, limit=len(expected))
    assert nxt is None and len(recs) == len(expected)
    client.delete_collection(name)


# ---------------------------------------------------------------------------------------------
# Query


def brute(points, q, distance):
    def score(v):
        if distance == models.Distance.COSINE:
            a, b = norm(v), norm(q)
            return sum(x * y for x, y in zip(a, b))
        if distance == models.Distance.DOT:
            return sum(x * y for x, y in zip(v, q))
        return math.sqrt(sum((x - y) ** 2 for x, y in zip(v, q)))

    scored = [(pid, score(v)) for pid, v in points.items()]
    reverse = distance != models.Distance.EUCLID
    return sorted(scored, key=lambda s: (-s[1] if reverse else s[1], s[0]))


@pytest.mark.parametrize("distance", [models.Distance.COSINE, models.Distance.DOT, models.Distance.EUCLID])
def test_query_points(client, collection_name, distance):
    name = collection_name
    make(client, name, distance=distance, dim=8)
    rng = random.Random(11)
    points = {i: vec(rng, 8) for i in range(1, 121)}
    client.upsert(name, [models.PointStruct(id=i, vector=v, payload={"i": i, "odd": i % 2 == 1})
                         for i, v in points.items()])
    q = vec(rng, 8)
    truth = brute(points, q, distance)

    res = client.query_points(name, query=q, limit=10, search_params=models.SearchParams(exact=True)).points
    assert [p.id for p in res] == [pid for pid, _ in truth[:10]]
    for p, (_, s) in zip(res, truth):
        assert p.score == pytest.approx(s, abs=1e-4)
    assert res[0].payload == {"i": res[0].id, "odd": res[0].id % 2 == 1}  # with_payload default
    assert res[0].vector is None

    # the HNSW path, with hnsw_ef: a graph this small is searched completely
    res = client.query_points(name, query=q, limit=10, search_params=models.SearchParams(hnsw_ef=128)).points
    assert len({p.id for p in res} & {pid for pid, _ in truth[:10]}) >= 9

    # offset and limit
    res = client.query_points(name, query=q, limit=5, offset=3, search_params=models.SearchParams(exact=True)).points
    assert [p.id for p in res] == [pid for pid, _ in truth[3:8]]

    # filter
    odd = models.Filter(must=[models.FieldCondition(key="odd", match=models.MatchValue(value=True))])
    res = client.query_points(name, query=q, query_filter=odd, limit=10, with_payload=False,
                              search_params=models.SearchParams(exact=True)).points
    assert [p.id for p in res] == [pid for pid, _ in truth if pid % 2 == 1][:10]
    assert res[0].payload is None

    # score_threshold: keeps what is better than it
    cut = truth[6][1]
    thr = (cut + truth[7][1]) / 2
    res = client.query_points(name, query=q, limit=50, score_threshold=thr,
                              search_params=models.SearchParams(exact=True)).points
    assert [p.id for p in res] == [pid for pid, _ in truth[:7]]

    # by point id: nearest to that point's vector, the point itself left out
    pid0 = truth[0][0]
    by_id = brute({k: v for k, v in points.items() if k != pid0}, points[pid0], distance)
    res = client.query_points(name, query=pid0, limit=5, with_vectors=True,
                              search_params=models.SearchParams(exact=True)).points
    assert pid0 not in [p.id for p in res]
    assert [p.id for p in res] == [pid for pid, _ in by_id[:5]]
    assert len(res[0].vector) == 8

    # batch
    q2 = vec(rng, 8)
    truth2 = brute(points, q2, distance)
    out = client.query_batch_points(name, requests=[
        models.QueryRequest(query=q, limit=3, params=models.SearchParams(exact=True)),
        models.QueryRequest(query=q2, limit=4, filter=odd, params=models.SearchParams(exact=True), with_payload=True),
    ])
    assert [p.id for p in out[0].points] == [pid for pid, _ in truth[:3]]
    assert [p.id for p in out[1].points] == [pid for pid, _ in truth2 if pid % 2 == 1][:4]
    assert out[1].points[0].payload["odd"] is True
    client.delete_collection(name)


# ---------------------------------------------------------------------------------------------
# Payload writes and indexes


def test_payload_writes(client, collection_name):
    name = collection_name
    make(client, name)
    client.upsert(name, [models.PointStruct(id=i, vector=[1.0, i, 0, 0], payload={"i": i, "g": i % 3, "keep": "x"})
                         for i in range(1, 10)])

    def payload(i):
        return client.retrieve(name, [i])[0].payload

    client.set_payload(name, {"new": 1, "i": -1}, points=[1, 2])
    assert payload(1) == {"i": -1, "g": 1, "keep": "x", "new": 1}
    g0 = models.Filter(must=[models.FieldCondition(key="g", match=models.MatchValue(value=0))])
    client.set_payload(name, {"zero": True}, points=g0)
    assert [r.id for r in client.scroll(name, scroll_filter=models.Filter(must=[
        models.FieldCondition(key="zero", match=models.MatchValue(value=True))]))[0]] == [3, 6, 9]

    # set under a key: merges into the object there, making it when missing
    client.set_payload(name, {"a": 1}, points=[4], key="deep.inner")
    client.set_payload(name, {"b": 2}, points=[4], key="deep.inner")
    assert payload(4)["deep"] == {"inner": {"a": 1, "b": 2}}

    client.overwrite_payload(name, {"only": "this"}, points=[5])
    assert payload(5) == {"only": "this"}
    client.overwrite_payload(name, {"g": 100}, points=g0)
    for i in (3, 6, 9):
        assert payload(i) == {"g": 100}

    client.delete_payload(name, keys=["keep", "deep.inner.a"], points=[4])
    assert payload(4) == {"i": 4, "g": 1, "deep": {"inner": {"b": 2}}}
    client.delete_payload(name, keys=["keep"], points=models.Filter(must=[
        models.FieldCondition(key="g", match=models.MatchValue(value=1))]))
    assert "keep" not in payload(1) and "keep" not in payload(7) and payload(2)["keep"] == "x"

    client.clear_payload(name, points_selector=[7])
    assert payload(7) == {}
    g100 = models.Filter(must=[models.FieldCondition(key="g", match=models.MatchValue(value=100))])
    client.clear_payload(name, points_selector=models.FilterSelector(filter=g100))
    for i in (3, 6, 9):
        assert payload(i) == {}
    assert client.count(name).count == 9  # payload writes keep the points and their vectors
    [r] = client.retrieve(name, [3], with_vectors=True)
    assert r.vector == pytest.approx(norm([1.0, 3.0, 0.0, 0.0]), abs=1e-6)
    client.delete_collection(name)


def test_payload_index(client, collection_name):
    name = collection_name
    make(client, name)
    client.upsert(name, [models.PointStruct(id=i, vector=[1.0, i, 0, 0], payload={"color": "red" if i % 2 else "blue"})
                         for i in range(1, 8)])
    client.create_payload_index(name, "color", field_schema=models.PayloadSchemaType.KEYWORD)
    client.create_payload_index(name, "n", field_schema=models.PayloadSchemaType.INTEGER)
    schema = client.get_collection(name).payload_schema
    assert schema["color"].data_type == models.PayloadSchemaType.KEYWORD
    assert schema["color"].points == 7
    assert schema["n"].data_type == models.PayloadSchemaType.INTEGER
    red = models.Filter(must=[models.FieldCondition(key="color", match=models.MatchValue(value="red"))])
    assert client.count(name, count_filter=red).count == 4
    client.delete_payload_index(name, "n")
    assert set(client.get_collection(name).payload_schema) == {"color"}
    client.delete_collection(name)


# ---------------------------------------------------------------------------------------------
# Errors and auth


def test_errors(client, collection_name):
    name = collection_name
    with pytest.raises(UnexpectedResponse) as e:
        client.get_collection(name)
    assert status_of(e) == 404
    with pytest.raises(UnexpectedResponse) as e:
        client.upsert(name, [models.PointStruct(id=1, vector=[1.0] * DIM)])
    assert status_of(e) == 404
    with pytest.raises(UnexpectedResponse) as e:
        client.query_points(name, query=[1.0] * DIM)
    assert status_of(e) == 404

    make(client, name)
    with pytest.raises(UnexpectedResponse) as e:
        client.upsert(name, [models.PointStruct(id=1, vector=[1.0] * (DIM + 1))])
    assert status_of(e) == 400 and "dim" in error_text(e).lower()
    with pytest.raises(UnexpectedResponse) as e:
        client.query_points(name, query=[1.0] * (DIM - 1))
    assert status_of(e) == 400
    assert client.count(name).count == 0  # nothing was written

    with pytest.raises(UnexpectedResponse) as e:
        client.query_points(name, query=12345)
    assert status_of(e) == 404

    # unsupported features: a clear 400 naming them
    with pytest.raises(UnexpectedResponse) as e:
        client.create_collection(collection_name + "_s", vectors_config=models.VectorParams(size=4, distance="Cosine"),
                                 sparse_vectors_config={"text": models.SparseVectorParams()})
    assert status_of(e) == 400 and "sparse" in error_text(e)
    with pytest.raises(UnexpectedResponse) as e:
        client.create_collection(collection_name + "_d", vectors_config={"dense": models.VectorParams(size=4, distance="Cosine")})
    assert status_of(e) == 400 and "dense" in error_text(e)
    assert not client.collection_exists(collection_name + "_s")
    assert not client.collection_exists(collection_name + "_d")
    with pytest.raises(UnexpectedResponse) as e:
        client.query_points(name, query=[1.0] * DIM, using="dense")
    assert status_of(e) == 400 and "dense" in error_text(e)
    with pytest.raises(UnexpectedResponse) as e:
        client.query_points(name, query=models.RecommendQuery(recommend=models.RecommendInput(positive=[1])))
    assert status_of(e) == 400 and "recommend" in error_text(e)
    with pytest.raises(UnexpectedResponse) as e:
        client.count(name, count_filter=models.Filter(must=[models.FieldCondition(
            key="loc", geo_radius=models.GeoRadius(center=models.GeoPoint(lat=0, lon=0), radius=1.0))]))
    assert status_of(e) == 400 and "geo_radius" in error_text(e)
    client.delete_collection(name)


def test_auth(node, client, collection_name):
    name = collection_name
    make(client, name)
    client.upsert(name, [models.PointStruct(id=1, vector=[1.0, 0, 0, 0], payload={"a": 1})])

    anon = QdrantClient(url=node.url, prefer_grpc=False)
    with pytest.raises(UnexpectedResponse) as e:
        anon.get_collections()
    assert status_of(e) == 401
    with pytest.raises(UnexpectedResponse) as e:
        anon.retrieve(name, [1])
    assert status_of(e) == 401
    anon.close()

    wrong = QdrantClient(url=node.url, api_key="vg_nope_nope", prefer_grpc=False)
    with pytest.raises(UnexpectedResponse) as e:
        wrong.get_collections()
    assert status_of(e) in (401, 403)
    wrong.close()

    reader = node.client("read")
    assert [r.id for r in reader.retrieve(name, [1])] == [1]
    assert reader.count(name).count == 1
    assert reader.query_points(name, query=[1.0, 0, 0, 0]).points[0].id == 1
    with pytest.raises(UnexpectedResponse) as e:
        reader.upsert(name, [models.PointStruct(id=2, vector=[1.0, 0, 0, 0])])
    assert status_of(e) == 403
    with pytest.raises(UnexpectedResponse) as e:
        reader.set_payload(name, {"b": 1}, points=[1])
    assert status_of(e) == 403
    with pytest.raises(UnexpectedResponse) as e:
        reader.delete_collection(name)
    assert status_of(e) == 403
    with pytest.raises(UnexpectedResponse) as e:
        reader.create_collection(name + "_r", vectors_config=models.VectorParams(size=4, distance="Dot"))
    assert status_of(e) == 403
    reader.close()
    assert client.count(name).count == 1
    assert client.retrieve(name, [1])[0].payload == {"a": 1}
    client.delete_collection(name)


# ---------------------------------------------------------------------------------------------
# Filters, against answers computed here

WORDS = ["quick", "brown", "fox", "lazy", "dog", "jumps", "over", "red", "sky"]
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
UUIDS = [str(uuid.UUID(int=random.Random(i).getrandbits(128))) for i in range(6)]


def dataset():
    rng = random.Random(1234)
    pts = {}
    ids = list(range(1, 61)) + UUIDS
    for n, pid in enumerate(ids):
        i = n + 1
        when = T0 + timedelta(days=i % 30, hours=i % 7)
        tz = timezone(timedelta(hours=(i % 5) - 2))
        p = {
            "i": i,
            "color": ["red", "green", "blue"][i % 3],
            "tags": [f"t{i % 4}", f"t{i % 5 + 4}"][: 1 + i % 2],
            "price": round(i * 1.25, 2),
            "flag": i % 2 == 0,
            "mix": [i % 4, "s%d" % (i % 3), i % 5 == 0][i % 3],
            "when": when.astimezone(tz).isoformat().replace("+00:00", "Z"),
            "desc": " ".join(rng.sample(WORDS, 3)) + f" n{i % 6}",
            "meta": {"owner": {"name": ["alice", "bob"][i % 2]}, "level": i % 4},
            "items": [{"sku": "a", "qty": i % 5}, {"sku": "b", "qty": (i * 3) % 5}],
        }
        m = i % 5
        if m == 0:
            p["maybe"] = None
        elif m == 1:
            pass  # missing
        elif m == 2:
            p["maybe"] = []
        elif m == 3:
            p["maybe"] = "x"
        else:
            p["maybe"] = [None, "y"]
        pts[pid] = (p, vec(rng, DIM))
    return pts


def order_key(pid):
    return (1, pid) if isinstance(pid, str) else (0, pid)


def when(p):
    return datetime.fromisoformat(p["when"].replace("Z", "+00:00"))


def toks(s):
    return set(s.lower().split())


D_LO = datetime(2024, 1, 10, tzinfo=timezone.utc)
D_HI = datetime(2024, 1, 20, 12, tzinfo=timezone.utc)
FC, MV, MA, MX, MT, R = (models.FieldCondition, models.MatchValue, models.MatchAny,
                         models.MatchExcept, models.MatchText, models.Range)
CASES = {
    "match_value_str": (models.Filter(must=[FC(key="color", match=MV(value="red"))]), lambda p: p["color"] == "red"),
    "match_value_int": (models.Filter(must=[FC(key="i", match=MV(value=7))]), lambda p: p["i"] == 7),
    "match_value_bool": (models.Filter(must=[FC(key="flag", match=MV(value=False))]), lambda p: not p["flag"]),
    "match_bool_not_int": (models.Filter(must=[FC(key="mix", match=MV(value=True))]), lambda p: p["mix"] is True),
    "match_int_not_bool": (models.Filter(must=[FC(key="mix", match=MV(value=1))]),
                           lambda p: type(p["mix"]) is int and p["mix"] == 1),
    "match_array_element": (models.Filter(must=[FC(key="tags", match=MV(value="t2"))]), lambda p: "t2" in p["tags"]),
    "match_any": (models.Filter(must=[FC(key="tags", match=MA(any=["t1", "t7"]))]),
                  lambda p: bool({"t1", "t7"} & set(p["tags"]))),
    "match_any_int_not_bool": (models.Filter(must=[FC(key="mix", match=MA(any=[0, 1]))]),
                               lambda p: type(p["mix"]) is int and p["mix"] in (0, 1)),
    "match_any_str": (models.Filter(must=[FC(key="mix", match=MA(any=["s1", "zz"]))]),
                      lambda p: p["mix"] in ("s1", "zz")),
    "match_except": (models.Filter(must=[FC(key="color", match=MX(**{"except": ["red", "green"]}))]),
                     lambda p: p["color"] == "blue"),
    "match_except_array": (models.Filter(must=[FC(key="tags", match=MX(**{"except": ["t0", "t1"]}))]),
                           lambda p: any(t not in ("t0", "t1") for t in p["tags"])),
    "match_except_missing_null": (models.Filter(must=[FC(key="maybe", match=MX(**{"except": ["x"]}))]),
                                  lambda p: any(v is not None and v != "x" for v in flat(p.get("maybe")))),
    "match_text": (models.Filter(must=[FC(key="desc", match=MT(text="fox quick"))]),
                   lambda p: {"fox", "quick"} <= toks(p["desc"])),
    "match_text_one": (models.Filter(must=[FC(key="desc", match=MT(text="n3"))]), lambda p: "n3" in toks(p["desc"])),
    "range_int": (models.Filter(must=[FC(key="i", range=R(gte=10, lt=20))]), lambda p: 10 <= p["i"] < 20),
    "range_float": (models.Filter(must=[FC(key="price", range=R(gt=12.5, lte=40.0))]), lambda p: 12.5 < p["price"] <= 40.0),
    "range_nested_level": (models.Filter(must=[FC(key="meta.level", range=R(gte=2))]), lambda p: p["meta"]["level"] >= 2),
    "range_datetime": (models.Filter(must=[FC(key="when", range=models.DatetimeRange(gte=D_LO, lt=D_HI))]),
                       lambda p: D_LO <= when(p) < D_HI),
    "range_datetime_naive": (models.Filter(must=[FC(key="when", range=models.DatetimeRange(
        gt=datetime(2024, 1, 25), lte="2024-01-28T03:00:00Z"))]),
        lambda p: datetime(2024, 1, 25, tzinfo=timezone.utc) < when(p) <= datetime(2024, 1, 28, 3, tzinfo=timezone.utc)),
    "has_id": (models.Filter(must=[models.HasIdCondition(has_id=[3, 5, 59, UUIDS[1], uuid.UUID(UUIDS[2]).hex])]),
               None),
    "is_empty": (models.Filter(must=[models.IsEmptyCondition(is_empty=models.PayloadField(key="maybe"))]),
                 lambda p: p["i"] % 5 in (0, 1, 2)),
    "is_null": (models.Filter(must=[models.IsNullCondition(is_null=models.PayloadField(key="maybe"))]),
                lambda p: p["i"] % 5 in (0, 4)),
    "not_is_empty": (models.Filter(must_not=[models.IsEmptyCondition(is_empty=models.PayloadField(key="maybe"))]),
                     lambda p: p["i"] % 5 in (3, 4)),
    "must_should_must_not": (models.Filter(
        must=[FC(key="flag", match=MV(value=True))],
        should=[FC(key="color", match=MV(value="red")), FC(key="color", match=MV(value="green"))],
        must_not=[FC(key="i", range=R(gt=40))]),
        lambda p: p["flag"] and p["color"] in ("red", "green") and not p["i"] > 40),
    "should_only": (models.Filter(should=[FC(key="i", match=MV(value=1)), FC(key="i", match=MV(value=2))]),
                    lambda p: p["i"] in (1, 2)),
    "empty_should": (models.Filter(should=[], must=[FC(key="i", range=R(lte=5))]), lambda p: p["i"] <= 5),
    "min_should": (models.Filter(min_should=models.MinShould(conditions=[
        FC(key="color", match=MV(value="red")), FC(key="flag", match=MV(value=True)), FC(key="i", range=R(gte=30))],
        min_count=2)),
        lambda p: (p["color"] == "red") + p["flag"] + (p["i"] >= 30) >= 2),
    "dotted_key": (models.Filter(must=[FC(key="meta.owner.name", match=MV(value="alice"))]),
                   lambda p: p["meta"]["owner"]["name"] == "alice"),
    "array_of_objects_key": (models.Filter(must=[FC(key="items[].sku", match=MV(value="b"))]), lambda p: True),
    "across_elements": (models.Filter(must=[FC(key="items[].sku", match=MV(value="b")),
                                            FC(key="items[].qty", range=R(gte=4))]),
                        lambda p: any(it["qty"] >= 4 for it in p["items"])),
    "nested": (models.Filter(must=[models.NestedCondition(nested=models.Nested(key="items", filter=models.Filter(must=[
        FC(key="sku", match=MV(value="b")), FC(key="qty", range=R(gte=4))])))]),
        lambda p: any(it["sku"] == "b" and it["qty"] >= 4 for it in p["items"])),
    "nested_brackets_must_not": (models.Filter(must=[models.NestedCondition(nested=models.Nested(key="items[]", filter=models.Filter(
        must_not=[FC(key="qty", range=R(lt=2))])))]),
        lambda p: any(not it["qty"] < 2 for it in p["items"])),
    "key_through_array_needs_brackets": (models.Filter(must=[FC(key="items.sku", match=MV(value="a"))]),
                                         lambda p: False),  # Qdrant: `items[].sku`, not `items.sku`
    "nested_needs_an_array": (models.Filter(must=[models.NestedCondition(nested=models.Nested(
        key="meta", filter=models.Filter(must=[FC(key="level", match=MV(value=1))])))]), lambda p: False),
    "filter_as_condition": (models.Filter(must=[
        models.Filter(should=[FC(key="color", match=MV(value="red")), FC(key="color", match=MV(value="green"))]),
        models.Filter(must_not=[FC(key="flag", match=MV(value=True))])]),
        lambda p: p["color"] in ("red", "green") and not p["flag"]),
    "must_not_filter": (models.Filter(must_not=[models.Filter(must=[FC(key="flag", match=MV(value=True)),
                                                                    FC(key="color", match=MV(value="blue"))])]),
                        lambda p: not (p["flag"] and p["color"] == "blue")),
    "missing_key": (models.Filter(must=[FC(key="nope", match=MV(value=1))]), lambda p: False),
}


def flat(v):
    if v is None:
        return [None]
    return v if isinstance(v, list) else [v]


@pytest.fixture(scope="module")
def filter_collection(node):
    c = node.client()
    name = f"py_filters_{uuid.uuid4().hex[:8]}"
    make(c, name, distance=models.Distance.EUCLID)
    pts = dataset()
    c.upsert(name, [models.PointStruct(id=pid, vector=v, payload=p) for pid, (p, v) in pts.items()])
    yield c, name, pts
    c.delete_collection(name)
    c.close()


@pytest.mark.parametrize("case", list(CASES))
def test_filter(filter_collection, case):
    client, name, pts = filter_collection
    flt, pred = CASES[case]
    if case == "has_id":
        want_set = {3, 5, 59, UUIDS[1], UUIDS[2]}
        expected = sorted((pid for pid in pts if pid in want_set), key=order_key)
    else:
        expected = sorted((pid for pid, (p, _) in pts.items() if pred(p)), key=order_key)

    assert client.count(name, count_filter=flt, exact=True).count == len(expected)

    got, offset = [], None
    while True:
        recs, offset = client.scroll(name, scroll_filter=flt, limit=7, offset=offset, with_payload=False)
        got += [r.id for r in recs]
        if offset is None:
            break
    assert got == expected

    # the same filter inside a k-NN search, exact and through the graph
    q = [0.1, -0.2, 0.3, 0.0]
    truth = [pid for pid, _ in brute({pid: v for pid, (_, v) in pts.items() if pid in set(expected)}, q,
                                     models.Distance.EUCLID)]
    res = client.query_points(name, query=q, query_filter=flt, limit=10, with_payload=False,
                              search_params=models.SearchParams(exact=True)).points
    assert [p.id for p in res] == truth[:10]
    res = client.query_points(name, query=q, query_filter=flt, limit=10, with_payload=False).points
    assert {p.id for p in res} <= set(expected)
    assert len({p.id for p in res} & set(truth[:10])) >= min(len(truth), 10) - 1
