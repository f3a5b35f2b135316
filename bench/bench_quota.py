"""Caption throughput at the quota with the model's real latency (issues 5 and 13).

Four runs of ``imgcap local`` on generated images (small, distinct, cheap to resize), each ending
by itself (every upload final, or the run's timeout):

- clean:          R = 200 requests/minute, the stand-in's default Nova Pro latency (~3.8 s a call),
                  ``--concurrency auto``. Goal: >= 0.95 R captions/minute over the steady state.
- faults:         the same with throttle=0.2,server=0.05,timeout=0.02,validation=0.01.
                  Goal: >= 0.9 x R x (1 - 0.28).
- tokens-bound:   a tokens-per-minute quota that binds before R does (200,000 TPM at ~1,500 tokens
                  a call allows ~130 calls/minute of the 200 R). Goal: >= 0.95 of the rate the TPM
                  allows (from the tokens the stand-in really counted), no call throttled for tokens.
- local-capacity: 2,000 images, ``--standin-latency fast``, no quota, 8 workers: what the local
                  runtime itself sustains. Goal: >= 400 images/minute; peak RSS reported. "No
                  quota" is both quotas: requests *and* tokens per minute (left at its SSM
                  default of 400,000 TPM, the workers' pacers would hold the fleet to ~360 calls a
                  minute at the fast stand-in's ~1,100 tokens a call, whatever the runtime does).

Steady state = first to last caption (from the caption records' ``captioned_at``); "whole run" =
captions over the run's elapsed time, start-up included. Cost per 1,000 captions: the tokens at
the list price plus the measured Lambda GB-seconds and requests (summary.json).

Prints a table and, as the very last line, one JSON object {"clean": {...}, ...}.

    python -m bench.bench_quota [--images 600] [--rpm 200] [--only clean,faults]
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import sys
import tempfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from imgcap.local.faults import parse_faults
from imgcap.local.latency import FAST
from imgcap.local.runtime import LocalOptions, run_local

NOTEBOOK_CAPTIONS_PER_MINUTE = 4.8  # the notebook: one call, then a 10-15 s sleep, one image at a time
FAULTS = "throttle=0.2,server=0.05,timeout=0.02,validation=0.01"
SCENARIOS = ("clean", "faults", "tokens-bound", "local-capacity")
TOKENS_BOUND_TPM = 200_000.0
CAPACITY_IMAGES = 2_000
CAPACITY_WORKERS = 8
CAPACITY_GOAL_PER_MINUTE = 400.0
UNLIMITED_RPM = 1_000_000.0
UNLIMITED_TPM = 1_000_000_000.0  # the top of the tokens-per-minute tunable's range


def make_images(dest: Path, count: int) -> None:
    """``count`` distinct 160x90 PNGs: cheap to resize, different bytes so no two share a hash."""
    dest.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = Image.new("RGB", (160, 90), ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256))
        draw = ImageDraw.Draw(image)
        draw.rectangle((i % 120, 10, i % 120 + 30, 40), fill=(255 - (i % 256), 255, 255))
        draw.text((5, 60), f"{i:04d}", fill=(0, 0, 0))
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        (dest / f"bench-{i:04d}.png").write_bytes(buffer.getvalue())


def steady_state_per_minute(out: Path) -> tuple[float | None, float | None]:
    """(captions/minute from the first to the last caption, that span in seconds)."""
    stamps = sorted(
        datetime.fromisoformat(json.loads(p.read_text(encoding="utf-8"))["captioned_at"]).timestamp()
        for p in (out / "captions").rglob("*.json")
    )
    if len(stamps) < 2 or stamps[-1] <= stamps[0]:
        return None, None
    span = stamps[-1] - stamps[0]
    return (len(stamps) - 1) / span * 60, span


def _options(name: str, images: Path, out: Path, args: argparse.Namespace) -> tuple[LocalOptions, float]:
    """The run's options and its target rate (captions/minute)."""
    common: dict[str, Any] = {"images": images, "out": out, "timeout_s": args.timeout}
    if name == "local-capacity":
        options = LocalOptions(
            **common,
            rpm=UNLIMITED_RPM,
            tpm=UNLIMITED_TPM,
            concurrency=CAPACITY_WORKERS,
            standin_latency=FAST,
            batch_size=10,
        )
        return options, CAPACITY_GOAL_PER_MINUTE
    spec = parse_faults(f"{FAULTS},seed=5") if name == "faults" else parse_faults("")
    tpm = TOKENS_BOUND_TPM if name == "tokens-bound" else None
    options = LocalOptions(**common, rpm=args.rpm, tpm=tpm, faults=spec, batch_size=args.batch_size)
    return options, args.rpm * (1 - spec.total_share)


def run(name: str, images: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    options, target = _options(name, images, out, args)
    summary = run_local(options, stream=sys.stderr).summary
    standin = summary.get("standin") or {}
    outcomes = standin.get("outcomes", {})
    captioned = max(1, summary["captioned"])
    steady, span = steady_state_per_minute(out)
    whole = summary["captioned"] / summary["elapsed_s"] * 60 if summary["elapsed_s"] else None
    tokens_per_call = None
    if name == "tokens-bound":
        paid = max(1, standin.get("paid_calls", 0))
        tokens_per_call = (standin["input_tokens"] + standin["output_tokens"]) / paid
        target = TOKENS_BOUND_TPM / tokens_per_call
    if name == "local-capacity":
        goal = CAPACITY_GOAL_PER_MINUTE
    elif name == "faults":
        goal = 0.9 * target
    else:
        goal = 0.95 * target
    rate = steady or 0.0
    reasons: dict[str, int] = {}
    for letter in summary.get("dead_lettered_details", []):
        reason = letter.get("last_problem") or "unknown"
        reasons[reason] = reasons.get(reason, 0) + 1
    cost = summary.get("cost_per_1000_captions", {})
    met = (
        rate >= goal
        and summary["lost"] == 0
        and summary["not_final"] == 0
        and not summary.get("duplicate_paid_calls")
    )
    if name == "tokens-bound":
        met = met and outcomes.get("throttled_tokens", 0) == 0
    return {
        "images": summary["images"],
        "captioned": summary["captioned"],
        "rejected": summary["rejected"],
        "captions_per_minute_steady": round(rate, 1),
        "captions_per_minute_whole_run": round(whole, 1) if whole else None,
        "steady_span_s": round(span, 1) if span else None,
        "elapsed_s": summary["elapsed_s"],
        "target_per_minute": round(target, 1),
        "goal_per_minute": round(goal, 1),
        "ratio_to_target": round(rate / target, 3) if target else None,
        "goal_met": bool(met),
        "lost": summary["lost"],
        "not_final": summary["not_final"],
        "model_calls": summary["model_calls"],
        "paid_calls_per_image": round((summary["paid_calls"] or 0) / captioned, 3),
        "failed_calls_by_kind": {k: v for k, v in outcomes.items() if k != "ok" and v},
        "throttled_for_tokens": outcomes.get("throttled_tokens", 0),
        "duplicate_paid_calls": summary.get("duplicate_paid_calls"),
        "dead_lettered": summary["dead_lettered"],
        "dead_letter_reasons": reasons,
        "p50_s": summary["upload_to_caption_p50_s"],
        "p95_s": summary["upload_to_caption_p95_s"],
        "concurrency": summary["capacity"]["concurrency"],
        "concurrency_auto": summary["capacity"]["auto"],
        "observed_call_s": summary["capacity"]["observed_call_s"],
        "tokens_per_call": round(tokens_per_call) if tokens_per_call else None,
        "cost_per_1000_bedrock_usd": cost.get("bedrock_usd"),
        "cost_per_1000_lambda_usd": cost.get("lambda_usd"),
        "cost_per_1000_total_usd": cost.get("total_usd"),
        "functions_peak_rss_mb": max(f["peak_rss_mb"] for f in summary["functions"].values()),
        "ratio_to_notebook": round(rate / NOTEBOOK_CAPTIONS_PER_MINUTE, 1),
    }


def _table(results: dict[str, dict[str, Any]]) -> str:
    columns = [
        ("scenario", lambda n, r: n),
        ("steady/min", lambda n, r: r["captions_per_minute_steady"]),
        ("whole/min", lambda n, r: r["captions_per_minute_whole_run"]),
        ("target", lambda n, r: r["target_per_minute"]),
        ("ratio", lambda n, r: r["ratio_to_target"]),
        ("goal", lambda n, r: "met" if r["goal_met"] else "MISSED"),
        ("C", lambda n, r: f"{r['concurrency']}{' auto' if r['concurrency_auto'] else ''}"),
        ("call s", lambda n, r: r["observed_call_s"]),
        ("lost", lambda n, r: r["lost"]),
        ("paid/img", lambda n, r: r["paid_calls_per_image"]),
        ("DLQ", lambda n, r: r["dead_lettered"]),
        ("p50 s", lambda n, r: r["p50_s"]),
        ("p95 s", lambda n, r: r["p95_s"]),
        ("$/1k bedrock", lambda n, r: r["cost_per_1000_bedrock_usd"]),
        ("$/1k lambda", lambda n, r: r["cost_per_1000_lambda_usd"]),
    ]
    rows = [[str(get(n, r)) for _, get in columns] for n, r in results.items()]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, (h, _) in enumerate(columns)]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    return "\n".join([line([h for h, _ in columns]), *(line(row) for row in rows)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_quota", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=600, help="images per quota run (600)")
    parser.add_argument("--rpm", type=float, default=200.0, help="the quota R (200)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=1200.0, help="per run, seconds")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-quota-") as tmp:
        root = Path(tmp)
        make_images(root / "images", args.images)
        if "local-capacity" in chosen:
            make_images(root / "capacity-images", CAPACITY_IMAGES)
        for name in chosen:
            images = root / ("capacity-images" if name == "local-capacity" else "images")
            results[name] = run(name, images, root / f"out-{name}", args)
            print(f"{name}: {json.dumps(results[name], sort_keys=True)}", file=sys.stderr, flush=True)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if "local-capacity" in results:
        results["local-capacity"]["runtime_peak_rss_mb"] = round(own, 1)
        results["local-capacity"]["largest_child_peak_rss_mb"] = round(children, 1)
    print(_table(results))
    print(json.dumps(results, sort_keys=True))
    return 0 if all(r["goal_met"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
