"""Search on the local runtime: what the stack's search stage is, on loopback.

``provision_search`` creates what ``infra/constructs/search_stage.py`` creates: the index queue and
its DLQ, the same three S3 notifications (ObjectCreated/ObjectRemoved under ``captions/``,
ObjectRemoved under ``images/``) added to the bucket's configuration, the vector bucket and index
in the S3 Vectors stand-in, and the SSM facts ``imgcap search`` reads. ``index_function_spec``
gives the index function the environment the contract's builder gives it in the stack, and
``IndexRunner`` runs it: a worker pool fed by the event-source emulator, like the caption stage.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from imgcap.local.emulator import BatchVerdict, Outcome, SqsEventSource
from imgcap.local.functions import LOCAL_LOG_LEVEL, _spec
from imgcap.local.provision import LocalStack, add_queue_notifications, create_queue, drop_test_events
from imgcap.local.workers import FunctionSpec, InvocationResult, WorkerPool
from lambdas.shared import contract
from lambdas.shared.contract import CAPTIONS_PREFIX, IMAGES_PREFIX, IndexKnobs

INDEX_MEMORY_MB = 256
INDEX_TIMEOUT_S = 30.0
INDEX_BATCH_SIZE = 10
INDEX_CONCURRENCY = 1
# The stand-in has no embeddings quota: pace at a rate that never slows a demo.
LOCAL_EMBEDDING_RPM = 60_000.0


@dataclass(frozen=True, slots=True)
class SearchStack:
    vector_bucket: str
    index_name: str
    index_arn: str
    queue_url: str
    queue_arn: str
    dlq_url: str
    embedding_model_id: str
    embedding_dimension: int
    embedding_input: str


def provision_search(
    *,
    s3: Any,
    sqs: Any,
    ssm: Any,
    s3vectors: Any,
    stack: LocalStack,
    embedding_model_id: str = contract.DEFAULT_EMBEDDING_MODEL_ID,
    embedding_dimension: int = contract.DEFAULT_EMBEDDING_DIMENSION,
    embedding_input: str = contract.DEFAULT_EMBEDDING_INPUT,
    max_receive_count: int = 4,
) -> SearchStack:
    contract.check_embedding_model(embedding_model_id, embedding_dimension)
    dlq_url, dlq_arn = create_queue(sqs, f"{stack.stack_name}-index-dlq", {})
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)})
    queue_url, queue_arn = create_queue(
        sqs,
        f"{stack.stack_name}-index",
        {"VisibilityTimeout": str(int(6 * INDEX_TIMEOUT_S)), "RedrivePolicy": redrive},
    )
    add_queue_notifications(
        s3,
        stack.bucket,
        [
            {
                "Id": f"index-{n}",
                "QueueArn": queue_arn,
                "Events": [events],
                "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}},
            }
            for n, (events, prefix) in enumerate(
                (
                    ("s3:ObjectCreated:*", CAPTIONS_PREFIX),
                    ("s3:ObjectRemoved:*", CAPTIONS_PREFIX),
                    ("s3:ObjectRemoved:*", IMAGES_PREFIX),
                )
            )
        ],
    )
    for url in (stack.events_queue_url, queue_url):  # S3's test events (PurgeQueue: once a minute)
        drop_test_events(sqs, url)

    vector_bucket = f"{stack.stack_name.lower()}-vectors"
    s3vectors.create_vector_bucket(vectorBucketName=vector_bucket)
    index_arn = s3vectors.create_index(
        vectorBucketName=vector_bucket,
        indexName=contract.DEFAULT_INDEX_NAME,
        dataType="float32",
        dimension=embedding_dimension,
        distanceMetric=contract.DEFAULT_DISTANCE_METRIC,
        metadataConfiguration={"nonFilterableMetadataKeys": list(contract.NON_FILTERABLE_METADATA_KEYS)},
    ).get("indexArn", "")
    search = SearchStack(
        vector_bucket=vector_bucket,
        index_name=contract.DEFAULT_INDEX_NAME,
        index_arn=str(index_arn),
        queue_url=queue_url,
        queue_arn=queue_arn,
        dlq_url=dlq_url,
        embedding_model_id=embedding_model_id,
        embedding_dimension=embedding_dimension,
        embedding_input=embedding_input,
    )
    for name, value in search_facts(search).items():
        ssm.put_parameter(Name=f"{stack.ssm_prefix}/{name}", Value=value, Type="String", Overwrite=True)
    return search


def search_facts(search: SearchStack) -> dict[str, str]:
    """The SSM facts the stack publishes (infra/constructs/search_stage.py), by parameter name."""
    return {
        contract.SSM_INDEX_NAME_PARAM: search.index_name,
        contract.SSM_VECTOR_BUCKET_PARAM: search.vector_bucket,
        contract.SSM_EMBEDDING_MODEL_PARAM: search.embedding_model_id,
        contract.SSM_EMBEDDING_DIMENSION_PARAM: str(search.embedding_dimension),
        contract.SSM_EMBEDDING_INPUT_PARAM: search.embedding_input,
        contract.SSM_DISTANCE_METRIC_PARAM: contract.DEFAULT_DISTANCE_METRIC,
        contract.SSM_INDEX_QUEUE_URL_PARAM: search.queue_url,
        contract.SSM_INDEX_DLQ_URL_PARAM: search.dlq_url,
    }


def index_function_spec(
    stack: LocalStack, search: SearchStack, runtime: Mapping[str, str], knobs: IndexKnobs | None = None
) -> FunctionSpec:
    """The index function with the environment the stack gives it (``runtime``: what Lambda sets)."""
    knobs = knobs or IndexKnobs(
        embedding_rpm=LOCAL_EMBEDDING_RPM,
        throttle_backoff_base_s=1.0,
        throttle_backoff_max_s=4.0,
        bedrock_read_timeout_s=10.0,
    )
    return _spec(
        f"{stack.stack_name}-{contract.INDEX_SERVICE}",
        contract.INDEX_HANDLER,
        INDEX_MEMORY_MB,
        INDEX_TIMEOUT_S,
        runtime,
        contract.index_environment(
            bucket=stack.bucket,
            ssm_prefix=stack.ssm_prefix,
            ssm_max_age_s=60,
            log_level=LOCAL_LOG_LEVEL,
            max_concurrency=INDEX_CONCURRENCY,
            vector_bucket=search.vector_bucket,
            index_name=search.index_name,
            embedding_model_id=search.embedding_model_id,
            embedding_dimension=search.embedding_dimension,
            embedding_input=search.embedding_input,
            knobs=knobs,
        ),
    )


class IndexRunner:
    """The index function's worker pool and its queue's event source mapping."""

    def __init__(self, *, sqs: Any, search: SearchStack, spec: FunctionSpec, on_result: Any = None) -> None:
        self.search = search
        self.pool = WorkerPool(spec, INDEX_CONCURRENCY)
        self._on_result = on_result
        self.source = SqsEventSource(
            sqs=sqs,
            queue_url=search.queue_url,
            queue_arn=search.queue_arn,
            region=spec.region,
            invoke=self.pool.invoke,
            batch_size=INDEX_BATCH_SIZE,
            max_concurrency=INDEX_CONCURRENCY,
            batching_window_s=0.5,
            on_result=self._record,
        )

    def _record(self, outcome: Outcome, event: dict[str, Any], verdict: BatchVerdict) -> None:
        if self._on_result is not None and isinstance(outcome, InvocationResult):
            self._on_result(outcome, event, verdict)

    @property
    def in_flight(self) -> int:
        return self.source.in_flight

    def start(self) -> None:
        self.source.start()

    def stop(self, grace_s: float) -> None:
        self.source.signal_stop()
        self.source.stop(timeout_s=grace_s)
        self.pool.close()


@contextmanager
def vectors_server(enabled: bool) -> Iterator[str | None]:
    """The S3 Vectors stand-in's URL for the block, or None when search is off."""
    if not enabled:
        yield None
        return
    from imgcap.local.vectors_standin import VectorsStandin

    with VectorsStandin().serve() as standin:
        yield standin.url


def search_summary(s3vectors: Any, sqs: Any, search: SearchStack) -> dict[str, Any]:
    """What summary.json says about the index at the end of a run."""
    from imgcap.ops.status import queue_depth
    from lambdas.index.vectors import VectorIndex

    vectors = sum(1 for _ in VectorIndex(s3vectors, search.vector_bucket, search.index_name).entries())
    return {
        "index": f"{search.vector_bucket}/{search.index_name}",
        "embedding_model": search.embedding_model_id,
        "vectors": vectors,
        "index_queue": queue_depth(sqs, search.queue_url).total,
        "index_dead_letter_queue": queue_depth(sqs, search.dlq_url).total,
    }
