"""The same seeded random operations against a node and against qdrant-client's local mode
(`QdrantClient(":memory:")`, the reference implementation of Qdrant's semantics), compared:
counts, scroll pages (ids, payloads, next offsets), exact k-NN (ids in order up to ties, scores
with a tolerance) and approximate k-NN by recall@10 against local's exact answers.

The generator avoids only what docs/http-api.md documents as unsupported: geo, values_count,
array indexes (`a[0]`), text-index tokenizers; `match` is never used on float payloads (Qdrant
never matches a float with an integer match value; floats are only used by ranges).

The seed is fixed (conftest.py; printed in the header and in every failure), and
VEKTAGRAF_PY_SEED replays another.
"""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from qdrant_client import QdrantClient, models

DIM = 8
N_POINTS = 300
N_FILTERS = 50

WORDS = ["alpha", "beta", "gamma", "delta", "edge", "graph", "vector", "node", "rust", "fox"]
STRS = ["a", "b", "c", "d", "e"]
KEYS = ["n", "f", "s", "b", "tags", "ints", "obj", "obj.a", "obj.b", "obj.c.d", "arr", "arr[].k",
        "arr[].v", "dt", "text", "mixed", "nul", "empty"]
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)

FC = models.FieldCondition


def gen_datetime(r: random.Random) -> str:
    t = T0 + timedelta(seconds=r.randrange(0, 90 * 86400))
    offset = r.choice([0, 0, 60, -120, 330, -480])
    s = t.astimezone(timezone(timedelta(minutes=offset))).strftime("%Y-%m-%dT%H:%M:%S")
    if r.random() < 0.3:
        s += ".%03d" % r.randrange(1000)
    if offset == 0 and r.random() < 0.7:
        return s + "Z"
    sign = "+" if offset >= 0 else "-"
    return s + "%s%02d:%02d" % (sign, abs(offset) // 60, abs(offset) % 60)


def gen_payload(r: random.Random) -> dict:
    def maybe(make):
        x = r.random()
        if x < 0.12:
            return "__missing__"
        if x < 0.17:
            return None
        return make()

    fields = {
        "n": lambda: r.randrange(10),
        "f": lambda: round(r.uniform(-50, 50), 3),
        "s": lambda: r.choice(STRS),
        "b": lambda: r.random() < 0.5,
        "tags": lambda: r.sample(STRS, r.randrange(4)),
        "ints": lambda: [r.randrange(10) for _ in range(r.randrange(4))],
        "obj": lambda: {
            "a": r.randrange(5),
            "b": r.choice(STRS),
            **({"c": {"d": r.random() < 0.5}} if r.random() < 0.8 else {}),
        },
        "arr": lambda: [{"k": r.choice(STRS), "v": r.randrange(6)} for _ in range(r.randrange(4))],
        "dt": lambda: gen_datetime(r) if r.random() < 0.9 else r.choice(["not a date", 17]),
        "text": lambda: " ".join(
            (w.upper() if r.random() < 0.1 else w) + r.choice(["", "", ",", "!"])
            for w in r.sample(WORDS, r.randrange(1, 5))
        ),
        "mixed": lambda: r.choice([r.randrange(3), r.choice(STRS[:3]), r.random() < 0.5, None,
                                   [r.randrange(3), r.choice(STRS[:3])], 2.5]),
        "nul": lambda: r.choice([None, [None], [None, 1], [], 1]),
        "empty": lambda: r.choice([[], {}, "", 0, [1]]),
    }
    out = {}
    for k, make in fields.items():
        v = maybe(make)
        if v != "__missing__":
            out[k] = v
    return out


def gen_vector(r: random.Random) -> list[float]:
    return [round(r.gauss(0, 1), 4) for _ in range(DIM)]


# ---------------------------------------------------------------------------------------------
# Random filters

MATCH_FIELDS = {  # key -> kinds of value `match` may use there
    "n": "int", "s": "str", "b": "bool", "tags": "str", "ints": "int", "obj.a": "int",
    "obj.b": "str", "obj.c.d": "bool", "arr[].k": "str", "arr[].v": "int", "mixed": "any",
}
RANGE_FIELDS = ["n", "f", "ints", "obj.a", "arr[].v", "mixed", "s"]


def match_value(r: random.Random, kind: str):
    if kind == "any":
        kind = r.choice(["int", "str", "bool"])
    return {"int": lambda: r.randrange(10), "str": lambda: r.choice(STRS),
            "bool": lambda: r.random() < 0.5}[kind](), kind


def gen_condition(r: random.Random, ids: list, depth: int, in_nested: bool = False):
    x = r.random()
    if in_nested:
        key = r.choice(["k", "v"])
        if x < 0.4:
            return FC(key=key, match=models.MatchValue(value=r.choice(STRS) if key == "k" else r.randrange(6)))
        if x < 0.7 and key == "v":
            return FC(key="v", range=gen_range(r, 0, 6))
        if x < 0.85:
            return FC(key="k", match=models.MatchAny(any=r.sample(STRS, 2)))
        return models.Filter(must_not=[FC(key="v", match=models.MatchValue(value=r.randrange(6)))])
    if x < 0.28:
        key = r.choice(list(MATCH_FIELDS))
        v, _ = match_value(r, MATCH_FIELDS[key])
        return FC(key=key, match=models.MatchValue(value=v))
    if x < 0.38:
        key = r.choice(list(MATCH_FIELDS))
        v, kind = match_value(r, MATCH_FIELDS[key])
        if kind == "bool":
            return FC(key=key, match=models.MatchValue(value=v))
        vals = list({match_value(r, kind)[0] for _ in range(r.randrange(1, 4))})
        if r.random() < 0.5:
            return FC(key=key, match=models.MatchAny(any=vals))
        return FC(key=key, match=models.MatchExcept(**{"except": vals}))
    if x < 0.45:
        words = r.sample(WORDS, r.choice([1, 1, 2]))
        text = " ".join(w.capitalize() if r.random() < 0.3 else w for w in words)
        return FC(key="text", match=models.MatchText(text=text))
    if x < 0.6:
        key = r.choice(RANGE_FIELDS)
        lo, hi = {"f": (-50, 50), "n": (0, 10), "ints": (0, 10)}.get(key, (0, 6))
        return FC(key=key, range=gen_range(r, lo, hi))
    if x < 0.66:
        return FC(key="dt", range=gen_dt_range(r))
    if x < 0.7:
        pick = r.sample(ids, min(len(ids), r.randrange(1, 30)))
        pick = [uuid.UUID(p).hex if isinstance(p, str) and r.random() < 0.5 else p for p in pick]
        return models.HasIdCondition(has_id=pick + [r.randrange(10**6, 10**7)])
    if x < 0.78:
        key = r.choice(KEYS)
        if r.random() < 0.5:
            return models.IsEmptyCondition(is_empty=models.PayloadField(key=key))
        return models.IsNullCondition(is_null=models.PayloadField(key=key))
    if x < 0.86:
        inner = gen_filter(r, ids, depth + 1, in_nested=True)
        return models.NestedCondition(nested=models.Nested(key=r.choice(["arr", "arr[]"]), filter=inner))
    if depth < 2:
        return gen_filter(r, ids, depth + 1)
    return FC(key="b", match=models.MatchValue(value=r.random() < 0.5))


def gen_range(r: random.Random, lo: float, hi: float) -> models.Range:
    bounds = {}
    for op in r.sample(["gt", "gte", "lt", "lte"], r.randrange(1, 3)):
        v = r.uniform(lo, hi)
        bounds[op] = round(v, 2) if r.random() < 0.5 else int(v)
    return models.Range(**bounds)


def gen_dt_range(r: random.Random) -> models.DatetimeRange:
    bounds = {}
    for op in r.sample(["gt", "gte", "lt", "lte"], r.randrange(1, 3)):
        t = T0 + timedelta(seconds=r.randrange(-86400, 95 * 86400))
        bounds[op] = r.choice([t, t.replace(tzinfo=None), t.astimezone(timezone(timedelta(hours=3)))])
    return models.DatetimeRange(**bounds)


def gen_filter(r: random.Random, ids: list, depth: int = 0, in_nested: bool = False) -> models.Filter:
    def conds(lo, hi):
        return [gen_condition(r, ids, depth, in_nested) for _ in range(r.randrange(lo, hi))]

    parts = {}
    for clause in r.sample(["must", "should", "must_not", "min_should"], r.randrange(1, 3)):
        if clause == "min_should":
            cs = conds(1, 4)
            parts["min_should"] = models.MinShould(conditions=cs, min_count=r.randrange(1, len(cs) + 1))
        else:
            parts[clause] = conds(0 if clause == "should" and r.random() < 0.1 else 1, 4)
    return models.Filter(**parts)


# ---------------------------------------------------------------------------------------------
# Comparing answers


def scroll_all(c: QdrantClient, name: str, flt, limit: int, with_payload):
    """Every page of a scroll: (ids, payloads, next_page_offset) each."""
    pages, offset = [], None
    while True:
        recs, offset = c.scroll(name, scroll_filter=flt, limit=limit, offset=offset, with_payload=with_payload)
        pages.append(([r.id for r in recs], [r.payload for r in recs], offset))
        if offset is None or len(pages) > 1000:
            return pages


def pages_of(c: QdrantClient, name: str, flt, limit: int, with_payload):
    """The pages scroll_all would give, cut from one scroll of everything (faster in local
    mode, which evaluates the filter over all points for every page)."""
    recs, _ = c.scroll(name, scroll_filter=flt, limit=100_000, with_payload=with_payload)
    pages = []
    for i in range(0, max(len(recs), 1), limit):
        page = recs[i:i + limit]
        nxt = recs[i + limit].id if i + limit < len(recs) else None
        pages.append(([r.id for r in page], [r.payload for r in page], nxt))
    return pages


def explain(ours, ref) -> str:
    """The first differences between two scroll_all answers, for a failure message."""
    out = []
    if len(ours) != len(ref):
        out.append(f"{len(ours)} pages, reference {len(ref)}")
    a = {i: p for ids, ps, _ in ours for i, p in zip(ids, ps)}
    b = {i: p for ids, ps, _ in ref for i, p in zip(ids, ps)}
    if set(a) != set(b):
        out.append(f"only here: {sorted(set(a) - set(b), key=str)[:10]}, "
                   f"only in the reference: {sorted(set(b) - set(a), key=str)[:10]}")
    for i in a:
        if i in b and a[i] != b[i]:
            out.append(f"point {i}: payload {a[i]}\n  reference {b[i]}")
            if len(out) > 4:
                break
    if not out:
        out.append(f"pages differ: {[(ids[:3], nxt) for ids, _, nxt in ours][:5]} vs "
                   f"{[(ids[:3], nxt) for ids, _, nxt in ref][:5]}")
    return "\n".join(out)


def same_count(ours, ref, name, flt, what):
    n = ref.count(name, count_filter=flt).count
    assert ours.count(name, count_filter=flt).count == n, f"{what}: count for {flt.model_dump(exclude_none=True)}"


def close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-3 * max(1.0, abs(a), abs(b))


def compare_exact(ours, ranked, offset: int, limit: int, what: str):
    """`ours` is the node's answer to an exact query with `offset` and `limit`; `ranked` the
    reference's ranking from the top, deeper than `offset + limit`. Scores must agree at every
    rank, and ids up to ties: a group of equal scores inside the page holds the same ids; one
    cut by the page's start or end may hold any of the tied ids."""
    ref = ranked[offset:offset + limit]
    what += "\n  here:      " + ", ".join(f"{p.id}:{p.score:.5f}" for p in ours)
    what += "\n  reference: " + ", ".join(f"{p.id}:{p.score:.5f}" for p in ref)
    assert len(ours) == len(ref), f"{what}\n{len(ours)} hits, reference {len(ref)}"
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert close(a.score, b.score), f"{what}\nhit {i} scores {a.score} vs reference {b.score}"
    ref_score = {p.id: p.score for p in ranked}
    i = 0
    while i < len(ref):
        j = i
        while j < len(ref) and close(ref[j].score, ref[i].score):
            j += 1
        got = {p.id for p in ours[i:j]}
        if (i > 0 or offset == 0) and j < len(ref):
            assert got == {p.id for p in ref[i:j]}, f"{what}\nids at ranks {i}..{j - 1} differ"
        else:
            for pid in got:
                assert pid in ref_score and close(ref_score[pid], ref[i].score), \
                    f"{what}\nid {pid} at ranks {i}.. is not tied there in the reference"
        i = j


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("distance", [models.Distance.COSINE, models.Distance.EUCLID, models.Distance.DOT])
def test_same_answers_as_local_mode(node, seed, distance):
    print(f"seed {seed} (VEKTAGRAF_PY_SEED={seed} replays it)")
    r = random.Random(f"{seed}-{distance.value}")
    ours = node.client()
    ref = QdrantClient(":memory:")
    name = f"py_local_{distance.value.lower()}_{uuid.uuid4().hex[:8]}"
    both = (ours, ref)
    for c in both:
        c.create_collection(name, vectors_config=models.VectorParams(size=DIM, distance=distance))

    # points: integer ids and UUIDs (some sent as 32 hex digits), a few duplicate vectors (ties)
    ids: list = r.sample(range(0, 100_000), N_POINTS * 4 // 5)
    ids += [str(uuid.UUID(int=r.getrandbits(128), version=4)) for _ in range(N_POINTS - len(ids))]
    vectors = {}
    for pid in ids:
        vectors[pid] = gen_vector(r) if r.random() > 0.05 or not vectors else list(r.choice(list(vectors.values())))
    payloads = {pid: gen_payload(r) for pid in ids}
    batch = [models.PointStruct(id=uuid.UUID(pid).hex if isinstance(pid, str) and r.random() < 0.3 else pid,
                                vector=vectors[pid], payload=payloads[pid]) for pid in ids]
    for i in range(0, len(batch), 100):
        for c in both:
            c.upsert(name, batch[i:i + 100])
    # a column batch too, overwriting some points
    redo = r.sample(ids, 20)
    col = models.Batch(ids=redo, vectors=[gen_vector(r) for _ in redo], payloads=[gen_payload(r) for _ in redo])
    for c in both:
        c.upsert(name, col)

    # random deletes and payload changes
    live = list(ids)
    for step in range(30):
        op = r.choice(["delete_ids", "delete_filter", "set", "set_key", "set_filter", "overwrite",
                       "delete_keys", "clear", "upsert"])
        if op == "delete_ids":
            gone = r.sample(live, 5)
            live = [p for p in live if p not in gone]
            for c in both:
                c.delete(name, points_selector=models.PointIdsList(points=gone))
        elif op == "delete_filter":
            flt = models.Filter(must=[FC(key="n", match=models.MatchValue(value=r.randrange(10))),
                                      FC(key="s", match=models.MatchValue(value=r.choice(STRS)))])
            for c in both:
                c.delete(name, points_selector=models.FilterSelector(filter=flt))
            live = [p.id for p in ref.scroll(name, limit=10_000)[0]]
        elif op == "set":
            p = {k: v for k, v in gen_payload(r).items() if r.random() < 0.3}
            p[r.choice(["s", "n", "new"])] = None if r.random() < 0.3 else r.choice(STRS)
            target = r.sample(live, 8)
            for c in both:
                c.set_payload(name, p, points=target)
        elif op == "set_key":
            key = r.choice(["obj", "obj.c", "deep.er"])
            target = r.sample(live, 8)
            p = {"d": r.random() < 0.5, "z": r.randrange(3)}
            for c in both:
                c.set_payload(name, p, points=target, key=key)
        elif op == "set_filter":
            flt = gen_filter(r, live)
            same_count(ours, ref, name, flt, f"seed {seed}, {distance.value}, step {step}")
            p = {"flagged": r.randrange(3)}
            for c in both:
                c.set_payload(name, p, points=flt)
        elif op == "overwrite":
            target = r.sample(live, 5)
            p = gen_payload(r)
            for c in both:
                c.overwrite_payload(name, p, points=target)
        elif op == "delete_keys":
            keys = r.sample(["n", "s", "obj.a", "obj.c.d", "tags", "arr", "missing.key", "arr[].k", "tags[]"], 2)
            target = r.sample(live, 10) if r.random() < 0.7 else gen_filter(r, live)
            if isinstance(target, models.Filter):
                same_count(ours, ref, name, target, f"seed {seed}, {distance.value}, step {step}")
            for c in both:
                c.delete_payload(name, keys=keys, points=target)
        elif op == "clear":
            target = r.sample(live, 3)
            for c in both:
                c.clear_payload(name, points_selector=target)
        else:
            new = [r.randrange(100_000, 200_000) for _ in range(5)]
            pts = [models.PointStruct(id=p, vector=gen_vector(r), payload=gen_payload(r)) for p in new]
            for c in both:
                c.upsert(name, pts)
            live += [p for p in new if p not in live]

    assert ours.count(name).count == ref.count(name).count
    assert ours.get_collection(name).points_count == ref.count(name).count
    full = scroll_all(ref, name, None, 10_000, True)
    mine = scroll_all(ours, name, None, 10_000, True)
    assert mine == full, "the whole collection differs: " + explain(mine, full)
    live = full[0][0]
    # vectors too (cosine ones normalised by both)
    theirs = {p.id: p.vector for p in ref.retrieve(name, live, with_vectors=True, with_payload=False)}
    for p in ours.retrieve(name, live, with_vectors=True, with_payload=False):
        assert p.vector == pytest.approx(theirs[p.id], abs=1e-5), f"vector of {p.id}"

    recalls = []
    for fi in range(N_FILTERS):
        flt = gen_filter(r, live) if fi % 10 else None
        what = f"seed {seed}, {distance.value}, filter {fi}: {flt and flt.model_dump(exclude_none=True)}"
        n_ref = ref.count(name, count_filter=flt).count
        assert ours.count(name, count_filter=flt, exact=True).count == n_ref, what

        limit = r.choice([3, 7, 25])
        sel = r.choice([True, False, ["s", "obj.a", "tags"], ["arr[].k", "obj.c", "nul"],
                        models.PayloadSelectorExclude(exclude=["obj.b", "arr[].v", "text", "dt"])])
        mine, theirs = scroll_all(ours, name, flt, limit, sel), pages_of(ref, name, flt, limit, sel)
        assert mine == theirs, what + "\n" + explain(mine, theirs)

        # a vector, or a point's id (nearest to its vector, the point itself left out)
        q = gen_vector(r) if fi % 3 else r.choice(live)
        what += f"\n  query {q}"
        offset = r.choice([0, 0, 0, 2])
        # the reference's exact ranking, deep enough for offsets and ties at the cut
        ranked = ref.query_points(name, query=q, query_filter=flt, limit=50, with_payload=False).points
        mine = ours.query_points(name, query=q, query_filter=flt, limit=10, offset=offset, with_payload=False,
                                 search_params=models.SearchParams(exact=True)).points
        compare_exact(mine, ranked, offset, 10, what)

        # score_threshold, halfway between two clearly different scores
        gaps = [k for k in range(min(len(ranked), 12) - 1)
                if not close(ranked[k].score, ranked[k + 1].score)
                and abs(ranked[k].score - ranked[k + 1].score) > 1e-2]
        if gaps:
            k = r.choice(gaps)
            thr = (ranked[k].score + ranked[k + 1].score) / 2
            mine = ours.query_points(name, query=q, query_filter=flt, limit=10, score_threshold=thr,
                                     with_payload=False, search_params=models.SearchParams(exact=True)).points
            compare_exact(mine, ranked[:k + 1], 0, 10, what + f"\n  score_threshold {thr}")

        approx = ours.query_points(name, query=q, query_filter=flt, limit=10, with_payload=False).points
        matching = {rec.id for rec in ref.scroll(name, scroll_filter=flt, limit=100_000, with_payload=False)[0]}
        assert {p.id for p in approx} <= matching, what
        truth = ranked[:10]
        assert len(approx) <= len(truth), what
        if truth:
            # ties: any id scoring like the 10th counts as found
            tied = {p.id for p in ranked if close(p.score, truth[-1].score)}
            want = {p.id for p in truth} | tied
            found = sum(1 for p in approx if p.id in want)
            recalls.append(min(found, len(truth)) / len(truth))

    mean = sum(recalls) / max(1, len(recalls))
    print(f"{distance.value}: mean recall@10 {mean:.3f} over {len(recalls)} filtered queries")
    assert mean >= 0.9
    ours.delete_collection(name)
    ours.close()
