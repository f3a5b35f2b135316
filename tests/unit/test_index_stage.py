"""Unit tier, issue 17: the index stage's pure parts, its use case over in-memory fakes, the stand-ins.

No sockets: the store is ``tests.fakes.MemoryStore``, the index is the S3 Vectors stand-in's
in-process ``VectorStore`` behind a tiny client shim, embeddings come from the embeddings stand-in.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from imgcap.local import embeddings_standin
from imgcap.local.vectors_standin import VectorsError, VectorStore, distance, matches
from lambdas.index import domain, embeddings
from lambdas.index.domain import Action
from lambdas.index.embeddings import EmbeddingError, EmbeddingRetry, EmbeddingSpec, Purpose
from lambdas.index.service import Delivery, IndexWorker, Outcome, RequestPacer
from lambdas.index.vectors import VectorIndex
from lambdas.shared import contract, keys
from tests.fakes import MemoryQueue, MemoryStore

pytestmark = pytest.mark.unit

DIM = 256


def s3_event(event: str, key: str) -> str:
    return json.dumps({"Records": [{"eventName": event, "s3": {"object": {"key": key}}}]})


# --- domain -----------------------------------------------------------------------------------


def test_given_a_source_key_then_its_vector_key_is_its_caption_path_and_round_trips():
    assert domain.vector_key("captions/trips/a b.jpg.json") == "trips/a b.jpg"
    assert domain.vector_key_for_source("images/trips/a b.jpg") == "trips/a b.jpg"
    long_source = "images/" + "x" * 1100 + ".jpg"  # hashed caption key: still one stable vector key
    assert domain.vector_key_for_source(long_source) == domain.vector_key(keys.caption_key(long_source))
    with pytest.raises(domain.InvalidIndexMessage):
        domain.vector_key("errors/a.json")


@pytest.mark.parametrize(
    ("source", "folder"),
    [("images/trips/a.jpg", "trips"), ("images/a.jpg", "/"), ("images/x/y/z.png", "x")],
)
def test_given_a_source_key_then_the_folder_is_its_first_segment(source, folder):
    assert domain.folder_of(source) == folder


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            s3_event("ObjectCreated:Put", "captions/trips/a+b.jpg.json"),
            [(Action.UPSERT, "captions/trips/a b.jpg.json")],
        ),
        (s3_event("ObjectRemoved:Delete", "captions/a.jpg.json"), [(Action.REMOVE, "captions/a.jpg.json")]),
        (s3_event("ObjectRemoved:Delete", "images/a.jpg"), [(Action.REMOVE, "captions/a.jpg.json")]),
        (s3_event("ObjectCreated:Put", "images/a.jpg"), []),  # the upload: its caption will come
        (s3_event("ObjectCreated:Put", "errors/a.jpg.json"), []),
        (s3_event("ObjectCreated:Put", "base64_images/a.jpg.txt"), []),
        (s3_event("ObjectCreated:Put", "captions/folder/"), []),
        (json.dumps({"Event": "s3:TestEvent", "Bucket": "b"}), []),
        (domain.reindex_message("captions/a.jpg.json"), [(Action.UPSERT, "captions/a.jpg.json")]),
    ],
)
def test_given_a_queue_body_then_only_caption_writes_upsert_and_removals_delete(body, expected):
    assert [(j.action, j.caption_key) for j in domain.jobs_from_body(body)] == expected


@pytest.mark.parametrize(
    "body", ["not json", "[]", '{"x": 1}', '{"index_v": 2, "caption_key": "captions/a"}']
)
def test_given_garbage_then_the_message_is_invalid(body):
    with pytest.raises(domain.InvalidIndexMessage):
        domain.jobs_from_body(body)


def record(
    source_key: str = "images/trips/a.jpg", etag: str = "e1", caption: str = "a red car", **extra: Any
) -> dict:
    return {
        "caption": caption,
        "source": {"bucket": "b", "key": source_key, "etag": etag},
        "encoded_key": keys.encoded_key(source_key),
        **extra,
    }


def test_given_a_caption_record_then_metadata_has_the_folder_tags_key_etag_and_caption_start():
    facts = domain.caption_facts(record(caption="x" * 2000, tags=["Red Car", "red car", " street ", 7]))
    metadata = domain.vector_metadata(facts)
    assert metadata == {
        "folder": "trips",
        "tags": ["red car", "street"],
        "source_key": "images/trips/a.jpg",
        "source_etag": "e1",
        "caption": "x" * contract.CAPTION_METADATA_CHARS,
    }
    filterable = {k: v for k, v in metadata.items() if k not in contract.NON_FILTERABLE_METADATA_KEYS}
    assert len(json.dumps(filterable).encode()) <= contract.MAX_FILTERABLE_METADATA_BYTES


def test_given_many_long_tags_then_they_are_cut_to_fit_the_filterable_budget():
    tags = domain.normalise_tags([f"tag number {i} " + "y" * 60 for i in range(200)])
    assert 0 < len(tags) <= domain.MAX_TAGS
    assert (
        len(json.dumps({"tags": list(tags), "folder": "f" * 60}).encode())
        <= contract.MAX_FILTERABLE_METADATA_BYTES
    )


def test_given_tags_and_alt_text_then_the_embedded_text_includes_them():
    facts = domain.caption_facts(record(caption="A beach.", tags=["sea"], alt_text="Sea and sand"))
    assert domain.embedding_text(facts) == "A beach.\nSea and sand\nTags: sea."


def test_given_folder_and_tags_then_the_filter_ands_one_eq_each():
    assert domain.query_filter() is None
    assert domain.query_filter(folder="trips/") == {"folder": {"$eq": "trips"}}
    assert domain.query_filter(folder="/") == {"folder": {"$eq": "/"}}
    assert domain.query_filter(folder="trips", tags=["Beach"]) == {
        "$and": [{"folder": {"$eq": "trips"}}, {"tags": {"$eq": "beach"}}]
    }


# --- embeddings formats -----------------------------------------------------------------------


def test_given_nova_then_each_part_is_its_own_single_embedding_request_with_the_purpose():
    spec = EmbeddingSpec(contract.NOVA_EMBEDDINGS_MODEL_ID, 1024)
    (text_body,) = embeddings.request_bodies(spec, Purpose.QUERY, text="red car")
    params = text_body["singleEmbeddingParams"]
    assert text_body["taskType"] == "SINGLE_EMBEDDING"
    assert params["embeddingPurpose"] == "GENERIC_RETRIEVAL"
    assert params["embeddingDimension"] == 1024
    assert params["text"]["value"] == "red car"
    both = embeddings.request_bodies(spec, Purpose.INDEX, text="t", image_png=b"\x89PNG")
    assert [b["singleEmbeddingParams"]["embeddingPurpose"] for b in both] == ["GENERIC_INDEX"] * 2
    assert "image" in both[1]["singleEmbeddingParams"]


def test_given_titan_then_text_and_image_go_in_one_request_with_the_length():
    spec = EmbeddingSpec(contract.TITAN_EMBEDDINGS_MODEL_ID, 384)
    (body,) = embeddings.request_bodies(spec, Purpose.INDEX, text="t" * 5000, image_png=b"img")
    assert body["embeddingConfig"] == {"outputEmbeddingLength": 384}
    assert len(body["inputText"]) == embeddings.TITAN_MAX_TEXT_CHARS
    assert body["inputImage"] == "aW1n"


def test_given_answers_of_both_families_then_the_vector_is_parsed_and_checked():
    assert embeddings.parse_answer(json.dumps({"embeddings": [{"embedding": [0.5, 0.5]}]}), 2) == [0.5, 0.5]
    assert embeddings.parse_answer(json.dumps({"embedding": [1, 0]}), 2) == [1.0, 0.0]
    with pytest.raises(ValueError, match="dimensions"):
        embeddings.parse_answer(json.dumps({"embedding": [1, 0, 0]}), 2)
    assert embeddings.classify_error_code("ThrottlingException") is EmbeddingRetry.THROTTLED
    assert embeddings.classify_error_code("AccessDeniedException") is EmbeddingRetry.CONFIGURATION


# --- the stand-ins --------------------------------------------------------------------------


def standin_embed(text: str, purpose: str = "GENERIC_INDEX") -> list[float]:
    body = embeddings.request_bodies(
        EmbeddingSpec(contract.NOVA_EMBEDDINGS_MODEL_ID, DIM), Purpose(purpose), text=text
    )[0]
    answer = embeddings_standin.answer(contract.NOVA_EMBEDDINGS_MODEL_ID, json.dumps(body).encode())
    return embeddings.parse_answer(json.dumps(answer), DIM)


def test_given_the_embeddings_standin_then_related_texts_are_nearer_than_unrelated_ones():
    car = standin_embed("a bright red car on a grey street")
    query = standin_embed("red car", "GENERIC_RETRIEVAL")
    forest = standin_embed("a dark green forest beside a lake")
    assert distance("cosine", query, car) < distance("cosine", query, forest)
    assert standin_embed("a bright red car on a grey street") == car  # deterministic


def test_given_the_vector_store_then_query_orders_by_distance_and_applies_filters():
    store = VectorStore()
    store.handle("CreateVectorBucket", {"vectorBucketName": "vb-test"})
    store.handle(
        "CreateIndex",
        {
            "vectorBucketName": "vb-test",
            "indexName": "idx",
            "dataType": "float32",
            "dimension": 2,
            "distanceMetric": "euclidean",
            "metadataConfiguration": {"nonFilterableMetadataKeys": ["caption"]},
        },
    )
    vectors = [
        {"key": "far", "data": {"float32": [5.0, 5.0]}, "metadata": {"folder": "a", "tags": ["x"]}},
        {"key": "near", "data": {"float32": [1.0, 0.0]}, "metadata": {"folder": "b", "tags": ["x", "y"]}},
        {"key": "mid", "data": {"float32": [2.0, 2.0]}, "metadata": {"folder": "a"}},
    ]
    store.handle("PutVectors", {"vectorBucketName": "vb-test", "indexName": "idx", "vectors": vectors})
    where = {"vectorBucketName": "vb-test", "indexName": "idx", "returnDistance": True}
    hits = store.handle("QueryVectors", {**where, "topK": 3, "queryVector": {"float32": [0.0, 0.0]}})[
        "vectors"
    ]
    assert [h["key"] for h in hits] == ["near", "mid", "far"]
    assert [h["distance"] for h in hits] == sorted(h["distance"] for h in hits)
    filtered = store.handle(
        "QueryVectors",
        {**where, "topK": 3, "queryVector": {"float32": [0.0, 0.0]}, "filter": {"tags": {"$eq": "x"}}},
    )["vectors"]
    assert [h["key"] for h in filtered] == ["near", "far"]
    with pytest.raises(VectorsError, match="non-filterable"):
        store.handle(
            "QueryVectors",
            {**where, "topK": 1, "queryVector": {"float32": [0.0, 0.0]}, "filter": {"caption": "x"}},
        )
    with pytest.raises(VectorsError, match="topK"):
        store.handle("QueryVectors", {**where, "topK": 101, "queryVector": {"float32": [0.0, 0.0]}})


def test_given_filter_operators_then_they_follow_the_s3_vectors_rules():
    meta = {"folder": "a", "tags": ["x", "y"], "n": 3}
    assert matches(meta, {"folder": "a"})
    assert matches(meta, {"tags": {"$in": ["z", "y"]}})
    assert not matches(meta, {"tags": {"$nin": ["y"]}})
    assert matches(meta, {"$or": [{"folder": "b"}, {"n": {"$gte": 3}}]})
    assert matches(meta, {"missing": {"$exists": False}})
    assert not matches(meta, {"$and": [{"folder": "a"}, {"n": {"$lt": 3}}]})


# --- the use case over fakes ----------------------------------------------------------------


class StoreClient:
    """The three s3vectors calls ``VectorIndex`` makes, straight into a ``VectorStore`` (no HTTP)."""

    def __init__(self, store: VectorStore) -> None:
        self.store = store

    def put_vectors(self, **kw: Any) -> dict:
        return self.store.handle("PutVectors", kw)

    def delete_vectors(self, **kw: Any) -> dict:
        return self.store.handle("DeleteVectors", kw)

    def list_vectors(self, **kw: Any) -> dict:
        return self.store.handle("ListVectors", kw)

    def query_vectors(self, **kw: Any) -> dict:
        return self.store.handle("QueryVectors", kw)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def make_index() -> tuple[VectorStore, VectorIndex]:
    store = VectorStore()
    store.handle("CreateVectorBucket", {"vectorBucketName": "vb-test"})
    store.handle(
        "CreateIndex",
        {
            "vectorBucketName": "vb-test",
            "indexName": "idx",
            "dataType": "float32",
            "dimension": DIM,
            "distanceMetric": "cosine",
        },
    )
    return store, VectorIndex(StoreClient(store), "vb-test", "idx")


def put_caption(s3: MemoryStore, source_key: str, caption: str, **extra: Any) -> str:
    etag = s3.upload(source_key, b"image-bytes-" + source_key.encode())
    s3.put_json(keys.caption_key(source_key), record(source_key, etag, caption, **extra))
    return etag


def worker_for(
    s3: MemoryStore,
    index: VectorIndex,
    embed: Any = None,
    rpm: float = 6000.0,
    clock: FakeClock | None = None,
):
    clock = clock or FakeClock()

    def default_embed(
        purpose: Purpose, *, text: str | None = None, image_png: bytes | None = None
    ) -> list[float]:
        return standin_embed(text or "")

    return IndexWorker(
        store=s3,
        index=index,
        embed=embed or default_embed,
        pacer=RequestPacer(rpm, clock=clock, sleep=clock.sleep),
        rand=lambda: 0.0,
    )


def test_given_captions_then_one_vector_each_and_the_bucket_is_never_written():
    s3 = MemoryStore()
    store, index = make_index()
    put_caption(s3, "images/trips/beach.jpg", "a bright beach with blue sea", tags=["beach"])
    put_caption(s3, "images/city.jpg", "a dark city street at night")
    before = dict(s3.objects)
    s3.calls.clear()
    deliveries = [
        Delivery("m1", "r1", s3_event("ObjectCreated:Put", "captions/trips/beach.jpg.json")),
        Delivery("m2", "r2", s3_event("ObjectCreated:Put", "captions/city.jpg.json")),
        Delivery("m3", "r3", s3_event("ObjectCreated:Put", "captions/city.jpg.json")),  # a duplicate event
    ]
    results = worker_for(s3, index).run(deliveries, lambda: 100.0)
    assert [results[m].outcome for m in ("m1", "m2", "m3")] == [
        Outcome.INDEXED,
        Outcome.INDEXED,
        Outcome.SKIPPED,
    ]
    assert sum(r.embedding_calls for r in results.values()) == 2  # the duplicate cost no second call
    assert store.count("vb-test", "idx") == 2
    assert store.calls["PutVectors"] == 1  # the whole batch in one call
    # No trigger loop: the stage only read; nothing under captions/ or images/ (or anywhere) was written
    assert s3.objects == before
    assert {op for op, _ in s3.calls} <= {"head", "get"}


def test_given_a_reupload_then_the_vector_is_replaced_and_a_stale_event_deletes_nothing_new():
    s3 = MemoryStore()
    store, index = make_index()
    put_caption(s3, "images/a.jpg", "a red car")
    worker = worker_for(s3, index)
    worker.run([Delivery("m1", "r1", s3_event("ObjectCreated:Put", "captions/a.jpg.json"))], lambda: 100.0)
    new_etag = put_caption(s3, "images/a.jpg", "a green forest")  # re-upload, new caption, same key
    worker.run([Delivery("m2", "r2", s3_event("ObjectCreated:Put", "captions/a.jpg.json"))], lambda: 100.0)
    (only,) = index.entries()
    assert only == ("a.jpg", {**only[1], "source_etag": new_etag, "caption": "a green forest"})
    # a late removal event of the old upload while the new one is there: the vector stays
    worker.run([Delivery("m3", "r3", s3_event("ObjectRemoved:Delete", "images/a.jpg"))], lambda: 100.0)
    assert store.count("vb-test", "idx") == 1


def test_given_an_image_deleted_then_its_vector_is_deleted():
    s3 = MemoryStore()
    store, index = make_index()
    put_caption(s3, "images/a.jpg", "a red car")
    worker = worker_for(s3, index)
    worker.run([Delivery("m1", "r1", s3_event("ObjectCreated:Put", "captions/a.jpg.json"))], lambda: 100.0)
    s3.delete("images/a.jpg")
    results = worker.run(
        [Delivery("m2", "r2", s3_event("ObjectRemoved:Delete", "images/a.jpg"))], lambda: 100.0
    )
    assert results["m2"].outcome is Outcome.REMOVED
    assert store.count("vb-test", "idx") == 0


def test_given_a_throttled_embedding_then_that_message_is_deferred_with_backoff_and_the_rest_indexed():
    s3 = MemoryStore()
    _, index = make_index()
    put_caption(s3, "images/a.jpg", "a red car")
    put_caption(s3, "images/b.jpg", "a blue boat")

    def embed(purpose: Purpose, *, text: str | None = None, image_png: bytes | None = None) -> list[float]:
        if text and "boat" in text:
            raise EmbeddingError("ThrottlingException: slow down", EmbeddingRetry.THROTTLED)
        return standin_embed(text or "")

    queue = MemoryQueue()
    deliveries = [
        Delivery("m1", "r1", s3_event("ObjectCreated:Put", "captions/a.jpg.json"), queue=queue),
        Delivery(
            "m2", "r2", s3_event("ObjectCreated:Put", "captions/b.jpg.json"), receive_count=3, queue=queue
        ),
    ]
    results = worker_for(s3, index, embed=embed).run(deliveries, lambda: 100.0)
    assert results["m1"].outcome is Outcome.INDEXED
    assert results["m2"].outcome is Outcome.DEFERRED
    assert results["m2"].retry is EmbeddingRetry.THROTTLED
    assert queue.visibility == {"r2": 20}  # base 10 s x 2^(3-1) = 40 s ceiling, equal jitter floor 20 s
    assert [k for k, _meta in index.entries()] == ["a.jpg"]


def test_given_a_quota_share_then_calls_are_spaced_by_the_pacer_with_a_fake_clock():
    s3 = MemoryStore()
    _, index = make_index()
    for name in "abc":
        put_caption(s3, f"images/{name}.jpg", f"caption {name}")
    clock = FakeClock()
    worker = worker_for(s3, index, rpm=30.0, clock=clock)  # one call every 2 s
    deliveries = [
        Delivery(f"m{n}", f"r{n}", s3_event("ObjectCreated:Put", f"captions/{n}.jpg.json")) for n in "abc"
    ]
    results = worker.run(deliveries, lambda: 100.0)
    assert all(r.outcome is Outcome.INDEXED for r in results.values())
    assert clock.slept == [pytest.approx(2.0), pytest.approx(2.0)]


def test_given_no_time_for_the_pacer_then_the_message_comes_back_soon_not_failed_by_throttling():
    s3 = MemoryStore()
    _, index = make_index()
    put_caption(s3, "images/a.jpg", "x")
    put_caption(s3, "images/b.jpg", "y")
    clock = FakeClock()
    worker = worker_for(s3, index, rpm=1.0, clock=clock)  # one call a minute
    deliveries = [
        Delivery(f"m{n}", f"r{n}", s3_event("ObjectCreated:Put", f"captions/{n}.jpg.json")) for n in "ab"
    ]
    results = worker.run(deliveries, lambda: 30.0)
    assert results["ma"].outcome is Outcome.INDEXED
    assert results["mb"].outcome is Outcome.DEFERRED
    assert results["mb"].retry is None
    assert clock.slept == []


def test_given_invalid_bodies_then_they_fail_for_the_dlq_and_do_not_block_the_batch():
    s3 = MemoryStore()
    _, index = make_index()
    put_caption(s3, "images/a.jpg", "x")
    results = worker_for(s3, index).run(
        [
            Delivery("bad", "r0", "garbage"),
            Delivery("ok", "r1", s3_event("ObjectCreated:Put", "captions/a.jpg.json")),
        ],
        lambda: 100.0,
    )
    assert results["bad"].outcome is Outcome.INVALID
    assert results["bad"].failed
    assert results["ok"].outcome is Outcome.INDEXED


def test_given_an_image_then_the_standin_embeds_it_through_the_words_of_its_standin_caption():
    import base64
    import io

    from PIL import Image

    from imgcap.local.standin import analyse_image, describe

    buf = io.BytesIO()
    Image.new("RGB", (320, 180), (220, 30, 30)).save(buf, "PNG")
    spec = EmbeddingSpec(contract.NOVA_EMBEDDINGS_MODEL_ID, DIM)
    (body,) = embeddings.request_bodies(spec, Purpose.INDEX, image_png=buf.getvalue())
    answer = embeddings_standin.answer(contract.NOVA_EMBEDDINGS_MODEL_ID, json.dumps(body).encode())
    image_vector = embeddings.parse_answer(json.dumps(answer), DIM)
    caption = describe(analyse_image(buf.getvalue()))
    assert answer["embeddings"][0]["embeddingType"] == "IMAGE"
    assert image_vector == pytest.approx(standin_embed(caption))
    assert base64.b64decode(body["singleEmbeddingParams"]["image"]["source"]["bytes"]) == buf.getvalue()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({contract.ENV_EMBEDDING_DIMENSION: "512"}, "EMBEDDING_MODEL_ID/EMBEDDING_DIMENSION"),
        ({contract.ENV_EMBEDDING_INPUT: "video"}, "EMBEDDING_INPUT"),
        ({contract.ENV_VECTOR_BUCKET: ""}, "VECTOR_BUCKET_NAME is missing"),
    ],
)
def test_given_a_bad_environment_then_index_settings_name_the_variable(override, message):
    from lambdas.index.settings import index_settings_from
    from lambdas.shared.config import ConfigError

    env = contract.index_environment(
        bucket="b",
        ssm_prefix="/S",
        ssm_max_age_s=60,
        log_level="INFO",
        max_concurrency=2,
        vector_bucket="vb",
        index_name="idx",
        embedding_model_id=contract.DEFAULT_EMBEDDING_MODEL_ID,
        embedding_dimension=1024,
        embedding_input="caption",
        knobs=contract.IndexKnobs(),
    )
    assert index_settings_from(env).worker_rpm == pytest.approx(50.0)
    with pytest.raises(ConfigError, match=message):
        index_settings_from({**env, **override})


def test_given_the_image_deleted_while_its_vector_is_put_then_the_recheck_deletes_the_vector():
    s3 = MemoryStore()
    store, index = make_index()
    put_caption(s3, "images/a.jpg", "a red car")

    class DeletingIndex:
        """The put lands just as another worker handles the image's removal (exact interleaving)."""

        def put(self, records: Any) -> int:
            s3.delete("images/a.jpg")
            return index.put(records)

        def delete(self, keys_: Any) -> int:
            return index.delete(keys_)

    worker = worker_for(s3, DeletingIndex())  # type: ignore[arg-type]
    results = worker.run(
        [Delivery("m1", "r1", s3_event("ObjectCreated:Put", "captions/a.jpg.json"))], lambda: 100.0
    )
    assert store.count("vb-test", "idx") == 0
    assert results["m1"].deletes == 1
