"""``imgcap search`` and ``imgcap reindex``, and the index lag ``imgcap status`` shows.

The index is found by the stack's name: SSM ``/<stack>/vector-bucket``, ``index-name``,
``embedding-model``, ``embedding-dimension`` and ``index-queue-url`` (written by the search stage,
and by ``imgcap local``). A stack deployed with ``-c search=false`` has none of them: every command
here says so in one line.

- ``search``: embeds the query with the index's own model and the retrieval purpose the model
  defines for queries (Nova: ``GENERIC_RETRIEVAL``), asks S3 Vectors for the ``k`` nearest vectors
  (``--folder``/``--tag`` become a metadata filter), prints rank, distance, image key and caption,
  or ``--json`` (``SEARCH_JSON_SCHEMA``), or ``--html`` (a small gallery from the encoded copies).
  Needs ``s3vectors:QueryVectors`` + ``s3vectors:GetVectors`` (metadata and filters),
  ``bedrock:InvokeModel`` on the model, ``ssm:GetParameters`` and ``s3:GetObject`` on
  ``base64_images/`` for ``--html`` (README "Search").
- ``reindex``: one message per caption under ``captions/<prefix>`` to the index queue; the index
  function does the rest at its paced rate. Idempotent: a vector's key is its caption's path.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from imgcap.ops.aws import EXIT_FAILED, EXIT_OK, OpsError
from imgcap.ops.bucket import list_objects, read_bytes
from imgcap.ops.context import OpsContext
from imgcap.ops.status import queue_depth
from imgcap.progress import Progress
from lambdas.index.bedrock import BedrockEmbedder
from lambdas.index.domain import query_filter, reindex_message, vector_key
from lambdas.index.embeddings import EmbeddingError, EmbeddingSpec, Purpose
from lambdas.index.vectors import Hit, VectorIndex
from lambdas.shared import contract, keys

SEARCH_JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["query", "k", "filter", "index", "embedding_model", "hits"],
    "properties": {
        # every `imgcap ... --json` object starts with these (imgcap.ops.commands)
        "command": {"const": "search"},
        "ok": {"type": "boolean"},
        "exit_code": {"type": "integer"},
        "query": {"type": "string"},
        "k": {"type": "integer", "minimum": 1, "maximum": contract.MAX_TOP_K},
        "filter": {"type": ["object", "null"]},
        "index": {"type": "string"},
        "embedding_model": {"type": "string"},
        "hits": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["rank", "key", "vector_key", "distance", "caption", "folder", "tags"],
                "properties": {
                    "rank": {"type": "integer", "minimum": 1},
                    "key": {"type": "string"},
                    "vector_key": {"type": "string"},
                    "distance": {"type": ["number", "null"]},
                    "caption": {"type": "string"},
                    "folder": {"type": "string"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}


@dataclass(frozen=True, slots=True)
class SearchFacts:
    vector_bucket: str
    index_name: str
    embedding_model_id: str
    embedding_dimension: int
    index_queue_url: str | None
    index_dlq_url: str | None


_PARAMS = (
    contract.SSM_VECTOR_BUCKET_PARAM,
    contract.SSM_INDEX_NAME_PARAM,
    contract.SSM_EMBEDDING_MODEL_PARAM,
    contract.SSM_EMBEDDING_DIMENSION_PARAM,
    contract.SSM_INDEX_QUEUE_URL_PARAM,
    contract.SSM_INDEX_DLQ_URL_PARAM,
)


def search_facts(ctx: OpsContext) -> SearchFacts | None:
    """The index's coordinates from SSM, or None when the stack has no search stage."""
    prefix = ctx.stack.ssm_prefix
    response = ctx.clients.ssm.get_parameters(Names=[f"{prefix}/{p}" for p in _PARAMS])
    values = {str(p["Name"]).rsplit("/", 1)[-1]: str(p["Value"]) for p in response.get("Parameters", [])}
    needed = _PARAMS[:4]
    if not all(values.get(p) for p in needed):
        return None
    try:
        dimension = int(values[contract.SSM_EMBEDDING_DIMENSION_PARAM])
    except ValueError as exc:
        raise OpsError(f"{prefix}/{contract.SSM_EMBEDDING_DIMENSION_PARAM} is not a number") from exc
    return SearchFacts(
        vector_bucket=values[contract.SSM_VECTOR_BUCKET_PARAM],
        index_name=values[contract.SSM_INDEX_NAME_PARAM],
        embedding_model_id=values[contract.SSM_EMBEDDING_MODEL_PARAM],
        embedding_dimension=dimension,
        index_queue_url=values.get(contract.SSM_INDEX_QUEUE_URL_PARAM) or None,
        index_dlq_url=values.get(contract.SSM_INDEX_DLQ_URL_PARAM) or None,
    )


def require_search(ctx: OpsContext) -> SearchFacts:
    facts = search_facts(ctx)
    if facts is None:
        raise OpsError(
            f"search is off for stack '{ctx.stack.name}': no {ctx.stack.ssm_prefix}/"
            f"{contract.SSM_INDEX_NAME_PARAM} parameter (deployed with -c search=false, or before the "
            "search stage existed); deploy with search on (the default), then `imgcap reindex`"
        )
    return facts


def _index(ctx: OpsContext, facts: SearchFacts) -> VectorIndex:
    return VectorIndex(ctx.clients.client("s3vectors"), facts.vector_bucket, facts.index_name)


# -- search -------------------------------------------------------------------------------------


def _hit_row(rank: int, hit: Hit) -> dict[str, Any]:
    meta = hit.metadata
    tags = meta.get(contract.META_TAGS) or []
    return {
        "rank": rank,
        "key": str(meta.get(contract.META_SOURCE_KEY) or f"{keys.IMAGES_PREFIX}{hit.key}"),
        "vector_key": hit.key,
        "distance": hit.distance,
        "caption": str(meta.get(contract.META_CAPTION) or ""),
        "folder": str(meta.get(contract.META_FOLDER) or ""),
        "tags": [str(t) for t in tags] if isinstance(tags, list) else [str(tags)],
    }


def run_search(
    ctx: OpsContext,
    query: str,
    *,
    k: int = 10,
    folder: str | None = None,
    tags: Sequence[str] = (),
    as_json_output: bool = False,
    html_out: Path | None = None,
) -> tuple[int, dict[str, Any]]:
    """(exit code, the search document); prints the hits unless ``as_json_output``."""
    if not query.strip():
        raise OpsError("the query is empty")
    if not 1 <= k <= contract.MAX_TOP_K:
        raise OpsError(f"-k must be between 1 and {contract.MAX_TOP_K} (S3 Vectors' topK limit)")
    facts = require_search(ctx)
    embedder = BedrockEmbedder(
        ctx.clients.client("bedrock-runtime"),
        EmbeddingSpec(facts.embedding_model_id, facts.embedding_dimension),
    )
    try:
        vector = embedder.embed(Purpose.QUERY, text=query)
    except EmbeddingError as exc:
        raise OpsError(
            f"embedding the query with {facts.embedding_model_id} failed: {exc}", EXIT_FAILED
        ) from exc
    index = _index(ctx, facts)
    filter_ = query_filter(folder, tags)
    rows = [_hit_row(n, hit) for n, hit in enumerate(index.query(vector, k, filter_), start=1)]
    document = {
        "query": query,
        "k": k,
        "filter": filter_,
        "index": f"{facts.vector_bucket}/{facts.index_name}",
        "embedding_model": facts.embedding_model_id,
        "hits": rows,
    }
    if not rows:
        if index.is_empty():
            ctx.warn(
                f"the index {facts.index_name} is empty: nothing has been indexed yet (captions are "
                "indexed as they are written; `imgcap reindex` indexes the existing ones)"
            )
        elif filter_ is not None:
            ctx.warn(f"no image matches the filter {json.dumps(filter_)}")
    if html_out is not None:
        html_out.write_text(gallery(ctx, document), encoding="utf-8")
        ctx.err.write(f"wrote {html_out}\n")
    if not as_json_output:  # with --json the command prints the document itself
        for row in rows:
            distance = "-" if row["distance"] is None else f"{row['distance']:.4f}"
            caption = " ".join(row["caption"].split())
            ctx.say(f"{row['rank']:>3}  {distance}  {row['key']}\n     {caption[:200]}")
    return EXIT_OK, document


def gallery(ctx: OpsContext, document: dict[str, Any]) -> str:
    """A small self-contained HTML page: each hit's encoded copy (1280x720 PNG), key, distance, caption."""
    cards = []
    for row in document["hits"]:
        image = ""
        try:
            encoded = read_bytes(ctx.clients.s3, ctx.stack.bucket, keys.encoded_key(row["key"]))
        except Exception:  # a missing or unreadable preview is not a failure of the search
            encoded = None
        if encoded:
            try:
                base64.b64decode(encoded, validate=True)
                image = f'<img alt="" src="data:image/png;base64,{encoded.decode("ascii")}">'
            except ValueError:
                image = ""
        distance = "-" if row["distance"] is None else f"{row['distance']:.4f}"
        tags = ", ".join(row["tags"])
        cards.append(
            "<figure>"
            + image
            + f"<figcaption><b>{row['rank']}. {html.escape(row['key'])}</b> <i>distance {distance}</i>"
            + (f"<br><small>tags: {html.escape(tags)}</small>" if tags else "")
            + f"<p>{html.escape(row['caption'])}</p></figcaption></figure>"
        )
    title = f"imgcap search: {html.escape(document['query'])}"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>"
        + title
        + "</title><style>body{font-family:sans-serif;margin:2em}figure{display:inline-block;width:340px;"
        "vertical-align:top;margin:0 1em 1em 0}img{width:320px;height:180px;object-fit:contain;"
        "background:#eee}</style></head><body><h1>"
        + title
        + f"</h1><p>{len(document['hits'])} hit(s) from {html.escape(document['index'])} "
        + f"({html.escape(document['embedding_model'])})</p>"
        + ("".join(cards) or "<p>No hits.</p>")
        + "</body></html>\n"
    )


# -- reindex ------------------------------------------------------------------------------------


def run_reindex(ctx: OpsContext, *, prefix: str = "", dry_run: bool = False) -> tuple[int, dict[str, Any]]:
    facts = require_search(ctx)
    if not facts.index_queue_url:
        raise OpsError(
            f"stack '{ctx.stack.name}' has no {ctx.stack.ssm_prefix}/{contract.SSM_INDEX_QUEUE_URL_PARAM}"
        )
    listed = list_objects(ctx.clients.s3, ctx.stack.bucket, keys.CAPTIONS_PREFIX + prefix)
    captions = [o.key for o in listed if o.key.endswith(keys.CAPTION_SUFFIX)]
    if dry_run:
        ctx.say(f"would queue {len(captions)} caption(s) under {keys.CAPTIONS_PREFIX}{prefix} for indexing")
        return EXIT_OK, {"captions": len(captions), "queued": 0, "failed": 0, "dry_run": True}
    failed = 0
    sqs = ctx.clients.sqs
    with Progress("reindex", total=len(captions), stream=ctx.err, unit="caption") as progress:
        for start in range(0, len(captions), 10):
            batch = captions[start : start + 10]
            entries = [{"Id": str(n), "MessageBody": reindex_message(key)} for n, key in enumerate(batch)]
            response = sqs.send_message_batch(QueueUrl=facts.index_queue_url, Entries=entries)
            bad = len(response.get("Failed", []))
            failed += bad
            progress.advance(len(batch) - bad, outcome="queued")
            if bad:
                progress.advance(bad, outcome="failed")
    ctx.say(
        f"queued {len(captions) - failed} caption(s) for indexing"
        + (f", {failed} failed to queue" if failed else "")
        + "; the index function embeds them at its paced rate (re-running is harmless)"
    )
    data = {"captions": len(captions), "queued": len(captions) - failed, "failed": failed, "dry_run": False}
    return (EXIT_FAILED if failed else EXIT_OK), data


# -- index lag (imgcap status) ---------------------------------------------------------------


@dataclass(slots=True)
class IndexStatus:
    index: str
    vectors: int
    captions: int
    not_indexed: int  # captions without a vector (or with a vector of an older upload)
    orphans: int  # vectors whose caption is gone
    not_indexed_examples: list[str]
    queue_waiting: int | None
    dlq_waiting: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        text = (
            f"search index {self.index}: {self.vectors} vector(s) for {self.captions} caption(s); "
            f"lag {self.not_indexed} caption(s) not yet indexed"
        )
        if self.orphans:
            text += f", {self.orphans} vector(s) without a caption"
        if self.queue_waiting is not None:
            text += f"; index queue {self.queue_waiting}, index DLQ {self.dlq_waiting}"
        return text


def index_status(ctx: OpsContext) -> IndexStatus | None:
    """The index against ``captions/`` (None without a search stage)."""
    facts = search_facts(ctx)
    if facts is None:
        return None
    vectors = dict(_index(ctx, facts).entries())
    captions = [
        o
        for o in list_objects(ctx.clients.s3, ctx.stack.bucket, keys.CAPTIONS_PREFIX)
        if o.key.endswith(".json")
    ]
    expected = {vector_key(o.key): o.key for o in captions}
    missing = sorted(caption for vkey, caption in expected.items() if vkey not in vectors)
    sqs = ctx.clients.sqs
    return IndexStatus(
        index=f"{facts.vector_bucket}/{facts.index_name}",
        vectors=len(vectors),
        captions=len(captions),
        not_indexed=len(missing),
        orphans=len(set(vectors) - set(expected)),
        not_indexed_examples=missing[:5],
        queue_waiting=queue_depth(sqs, facts.index_queue_url).total if facts.index_queue_url else None,
        dlq_waiting=queue_depth(sqs, facts.index_dlq_url).total if facts.index_dlq_url else None,
    )


# -- registration (imgcap.ops.commands calls this with its own `_add`) ---------------------------


def register(subparsers: Any, add: Any, positive_int: Any) -> None:
    def search_body(ctx: OpsContext, args: Any) -> tuple[int, dict[str, Any]]:
        return run_search(
            ctx,
            args.query,
            k=args.k,
            folder=args.folder,
            tags=args.tag or (),
            as_json_output=args.json,
            html_out=Path(args.html) if args.html else None,
        )

    def reindex_body(ctx: OpsContext, args: Any) -> tuple[int, dict[str, Any]]:
        return run_reindex(ctx, prefix=args.prefix or "", dry_run=args.dry_run)

    p = add(
        subparsers,
        "search",
        search_body,
        help_text="find images by what is in them (S3 Vectors index of the captions)",
        description=(
            "Embed QUERY with the index's embeddings model (the retrieval purpose for queries) and\n"
            "print the K nearest images: rank, distance (smaller is closer), image key and caption.\n"
            "--folder keeps images under images/FOLDER/ (first path segment; '/' for the top level),\n"
            "--tag keeps images whose caption record has that tag (repeatable: all must match).\n"
            "One embeddings call per search (Amazon Bedrock) and one QueryVectors request."
        ),
    )
    p.add_argument("query", metavar="QUERY", help="what to look for, in words")
    p.add_argument("-k", type=positive_int, default=10, metavar="K", help="how many hits (10, at most 100)")
    p.add_argument("--folder", metavar="F", help="only images under images/F/")
    p.add_argument("--tag", action="append", metavar="T", help="only images tagged T (repeatable)")
    p.add_argument("--html", metavar="FILE", help="also write a small HTML gallery of the hits")

    p = add(
        subparsers,
        "reindex",
        reindex_body,
        help_text="(re)index existing captions into the search index",
        description=(
            "Queue every caption under captions/PREFIX for the index function, which embeds it and\n"
            "puts its vector (replacing the one with the same key). Use after enabling search on an\n"
            "existing stack, or after a failure you fixed. Idempotent; one embeddings call per caption."
        ),
    )
    p.add_argument("--prefix", metavar="P", help="only captions under captions/P (e.g. trips/)")
    p.add_argument("--dry-run", action="store_true", help="count the captions; queue nothing")
