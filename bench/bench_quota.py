"""Issue 5 benchmark: caption throughput at the quota, on the local runtime with the stand-in.

Two runs of ``imgcap local`` on the same generated images (small, distinct, cheap to resize):

- clean:  the stand-in enforces only the quota R (a sliding 60-s window, HTTP 429 over it);
- faults: the stand-in also injects throttle=0.2, server=0.05, timeout=0.02, validation=0.01.

Goals: clean captions/min >= 0.95 R; faults >= 0.9 x R x (1 - 0.28), with 0 lost and 0 duplicate
paid calls. captions/min counts captions written over the caption stage's busy time (first model
call to last caption). Each run ends by itself (every upload final, or the runtime's timeout).

Prints one line per run and, as the very last line, one JSON object {"clean": {...}, "faults": {...}}.

    python -m bench.bench_quota [--images 300] [--rpm 120] [--concurrency 4] [--batch-size 4]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from imgcap.local.faults import parse_faults
from imgcap.local.runtime import LocalOptions, run_local

NOTEBOOK_CAPTIONS_PER_MINUTE = 4.8  # the notebook: one call, then a 10-15 s sleep, one image at a time
FAULTS = "throttle=0.2,server=0.05,timeout=0.02,validation=0.01"
CLEAN_GOAL = 0.95  # of R
FAULTS_GOAL = 0.90  # of R x (1 - fault share)


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


def run(name: str, images: Path, out: Path, args: argparse.Namespace, faults: str) -> dict[str, Any]:
    spec = parse_faults(f"{faults},seed=5" if faults else "")
    options = LocalOptions(
        images=images,
        out=out,
        rpm=args.rpm,
        concurrency=args.concurrency,
        batch_size=args.batch_size,
        faults=spec,
        timeout_s=args.timeout,
    )
    summary = run_local(options, stream=sys.stderr).summary
    standin = summary["standin"]
    share = spec.total_share
    target = args.rpm * (1 - share)
    goal = (FAULTS_GOAL if share else CLEAN_GOAL) * target
    cpm = summary["captions_per_minute_steady"] or 0.0
    captioned = max(1, summary["captioned"])
    outcomes = standin["outcomes"]
    reasons: dict[str, int] = {}
    for letter in summary["dead_lettered_details"]:
        reason = letter["last_problem"] or "unknown"
        reasons[reason] = reasons.get(reason, 0) + 1
    result = {
        "images": summary["images"],
        "captioned": summary["captioned"],
        "rejected": summary["rejected"],
        "rejected_by_code": summary["rejected_by_code"],
        "captions_per_minute": round(cpm, 2),
        "rpm": args.rpm,
        "target_captions_per_minute": round(target, 2),
        "goal_captions_per_minute": round(goal, 2),
        "ratio_to_target": round(cpm / target, 3),
        "goal_met": bool(
            cpm >= goal
            and summary["lost"] == 0
            and summary["not_final"] == 0
            and summary["duplicate_paid_calls"] == 0
        ),
        "lost": summary["lost"],
        "not_final": summary["not_final"],
        "model_calls": summary["model_calls"],
        "paid_calls": summary["paid_calls"],
        "model_calls_per_image": round(summary["model_calls"] / captioned, 3),
        "paid_calls_per_image": round(summary["paid_calls"] / captioned, 3),
        "failed_calls_retried": summary["model_calls"] - summary["paid_calls"],
        "failed_calls_by_kind": {k: v for k, v in outcomes.items() if k != "ok" and v},
        "duplicate_paid_calls": summary["duplicate_paid_calls"],
        "duplicates_avoided": summary["duplicates_avoided"],
        "dead_lettered": summary["dead_lettered"],
        "dead_letter_reasons": reasons,
        "p50_s": summary["upload_to_caption_p50_s"],
        "p95_s": summary["upload_to_caption_p95_s"],
        "ratio_to_notebook": round(cpm / NOTEBOOK_CAPTIONS_PER_MINUTE, 1),
        "steady_s": summary["steady_s"],
        "elapsed_s": summary["elapsed_s"],
        "quota_peak_in_window": standin["quota_peak"],
    }
    r = result
    print(
        f"{name}: {r['captions_per_minute']} captions/min (target {r['target_captions_per_minute']}, "
        f"ratio {r['ratio_to_target']}, goal {'met' if r['goal_met'] else 'MISSED'}); lost {r['lost']}; "
        f"paid calls/image {r['paid_calls_per_image']} (all calls/image {r['model_calls_per_image']}, "
        f"failed calls retried {r['failed_calls_retried']}); "
        f"duplicate paid calls {r['duplicate_paid_calls']}; DLQ {r['dead_lettered']}; "
        f"p50 {r['p50_s']} s, p95 {r['p95_s']} s; "
        f"x{r['ratio_to_notebook']} the notebook's 4.8/min",
        flush=True,
    )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_quota", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--rpm", type=float, default=120.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=900.0, help="per run, seconds")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-quota-") as tmp:
        root = Path(tmp)
        make_images(root / "images", args.images)
        results["clean"] = run("clean", root / "images", root / "out-clean", args, "")
        results["faults"] = run("faults", root / "images", root / "out-faults", args, FAULTS)
    print(json.dumps(results, sort_keys=True))
    return 0 if all(r["goal_met"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
