"""A backfill on the local runtime: ``imgcap local --mode batch`` on 300 generated images.

Two runs of the whole pipeline (resize, then a backfill through the batch stand-in, the online
consumer for whatever comes back):

- clean:  one job of 300 records. Expect every image captioned with ``mode: "batch"``, 0 lost,
          0 paid twice, the captions at half the on-demand price.
- faults: jobs of at most 100 records (so three jobs: the request is handed on twice) with
          ``failed_records=0.05,partial_jobs=1,failed_jobs=1,drop_events=1``: job 1 ends
          PartiallyCompleted and its completion event is lost (the scheduled poll collects it),
          job 2 ends Failed, and 5% of records get an error line (a 429 goes back online, a 400
          about the image becomes an error record). Expect 0 lost, 0 paid twice, every failed
          record ending as a caption or an error record.

Prints a table and, as the very last line, one JSON object {"clean": {...}, "faults": {...}}.

    python -m bench.batch_local [--images 300]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.bench_quota import make_images
from imgcap.local.batch_standin import parse_batch_faults
from imgcap.local.latency import FAST
from imgcap.local.runtime import LocalOptions, run_local
from lambdas.shared import contract

FAULTS = "failed_records=0.05,partial_jobs=1,failed_jobs=1,drop_events=1"
FAULT_JOB_RECORDS = 100


def run(name: str, images: Path, out: Path, count: int) -> dict[str, Any]:
    faulty = name == "faults"
    limits = contract.BatchLimits(
        min_records=min(100, count), max_records_per_job=FAULT_JOB_RECORDS if faulty else 50_000
    )
    options = LocalOptions(
        images=images,
        out=out,
        rpm=600.0,  # the records that come back are captioned online: do not wait on a small quota
        standin_latency=FAST,
        mode="batch",
        batch_limits=limits,
        batch_faults=parse_batch_faults(FAULTS if faulty else ""),
        search=False,
        timeout_s=1200.0,
    )
    summary = run_local(options, stream=sys.stderr).summary
    batch = summary["batch"]
    errors_from_batch = sum(j["counts"].get("error_record", 0) for j in batch["jobs"])
    failed_lines = sum((j.get("manifest") or {}).get("errorRecordCount", 0) for j in batch["jobs"])
    return {
        "images": summary["images"],
        "captioned": summary["captioned"],
        "rejected": summary["rejected"],
        "lost": summary["lost"],
        "not_final": summary["not_final"],
        "dead_lettered": summary["dead_lettered"],
        "duplicate_paid_calls": summary["duplicate_paid_calls"],
        "paid_calls": summary["paid_calls"],
        "jobs": [f"{j['status']} {j['records']}" for j in batch["jobs"]],
        "records": batch["records"],
        "failed_record_lines": failed_lines,
        "error_records_from_batch": errors_from_batch,
        "captions_by_mode": batch["captions_by_mode"],
        "events_dropped": batch["control_plane"]["events_dropped"],
        "polls": batch["polls"],
        "batch_captions_usd": batch["batch_captions_usd"],
        "same_captions_on_demand_usd": batch["same_captions_on_demand_usd"],
        "price_ratio": batch["price_ratio"],
        "cost_per_1000_captions": summary["cost_per_1000_captions"],
        "elapsed_s": summary["elapsed_s"],
        "ok": summary["lost"] == 0
        and summary["not_final"] == 0
        and summary["duplicate_paid_calls"] == 0
        and summary["captioned"] + summary["rejected"] == summary["images"]
        and (faulty or batch["captions_by_mode"] == {"batch": summary["captioned"]}),
    }


def table(results: dict[str, dict[str, Any]]) -> str:
    rows = [
        ("images", "images"),
        ("captioned", "captioned"),
        ("rejected (error records)", "rejected"),
        ("lost / not final / DLQ", lambda r: f"{r['lost']} / {r['not_final']} / {r['dead_lettered']}"),
        ("paid calls / paid twice", lambda r: f"{r['paid_calls']} / {r['duplicate_paid_calls']}"),
        ("jobs", lambda r: ", ".join(r["jobs"])),
        ("records", lambda r: ", ".join(f"{k} {v}" for k, v in sorted(r["records"].items()))),
        ("captions by mode", lambda r: ", ".join(f"{k} {v}" for k, v in r["captions_by_mode"].items())),
        ("events dropped / polls", lambda r: f"{r['events_dropped']} / {r['polls']}"),
        (
            "batch captions vs on demand",
            lambda r: (
                f"${r['batch_captions_usd']:.4f} vs ${r['same_captions_on_demand_usd']:.4f} "
                f"({r['price_ratio']}x)"
            ),
        ),
        ("elapsed s", "elapsed_s"),
        ("ok", "ok"),
    ]
    names = list(results)
    width = 30
    lines = [f"{'':{width}}" + "".join(f"  {n:>56}" for n in names)]
    for label, get in rows:
        cells = [get(results[n]) if callable(get) else results[n][get] for n in names]
        lines.append(f"{label:{width}}" + "".join(f"  {c!s:>56}" for c in cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--only", default="clean,faults")
    args = parser.parse_args(argv)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="imgcap-batch-") as tmp:
        root = Path(tmp)
        make_images(root / "images", args.images)
        for name in [n.strip() for n in args.only.split(",") if n.strip()]:
            results[name] = run(name, root / "images", root / f"out-{name}", args.images)
    print(table(results))
    print(json.dumps(results, sort_keys=True))
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
