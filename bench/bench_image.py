"""`make bench`: the resize/encode stage against the notebook's code (issue 7).

Inputs are generated here: photo-like JPEGs (gradients, texture, shapes, sensor-like noise) at 2, 12
and 24 megapixels, plus a 12 MP PNG and a 12 MP WebP of the same kind of content. For each input:

- baseline: the notebook's function (open, resize((1280, 720), LANCZOS), PNG with default settings,
  base64), in this process, on the same bytes;
- project: ``lambdas.resize.imaging.resize_and_encode`` with policy ``stretch`` (the notebook's
  geometry, so outputs are comparable);
- floor: the cheapest decode at the size we need (JPEG: libjpeg DCT scaling straight to the output
  size; PNG/WebP: a plain full decode, there is no cheaper one) plus the cheapest PNG encode of a
  1280x720 image (no row filter, stored deflate blocks);
- median seconds per image, speed-up (baseline / project), distance to the floor (project / floor),
  PSNR of the project's output against full decode + LANCZOS of the same geometry, output size, and
  peak RSS of a fresh subprocess per case (VmHWM: tracemalloc does not see Pillow's C allocations,
  and ru_maxrss inherits the parent's high-water mark across vfork+exec).

Then the import time of each handler (fresh subprocess each, median of 3) and the zipped size of the
Lambda layer built the way the stack builds it. A readable table first; the very last line of the
output is one JSON object.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import math
import os
import random
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageStat

REPO = Path(__file__).resolve().parents[1]
OUT_SIZE = (1280, 720)
MEMORY_MB = 1769  # the function's memory the pixel limit is derived from (one full vCPU)
HANDLERS = ("lambdas.resize.handler", "lambdas.caption.handler")
PSNR_IDENTICAL = 100.0  # reported when the output equals the reference exactly (PSNR is infinite)
SENSOR_NOISE = 6  # sigma of per-pixel noise: ~2.6 bits/pixel at JPEG q90, like a 24 MP camera file


# ---------------------------------------------------------------------------------------------
# Inputs


def photo_like(w: int, h: int, seed: int = 7, noise: float = SENSOR_NOISE) -> Image.Image:
    """Gradients (sky, light falloff), mid-frequency texture, hard-edged shapes and pixel noise."""
    rnd = random.Random(seed)
    ramp = Image.linear_gradient("L")
    base = Image.merge(
        "RGB",
        (
            ramp.resize((w, h), Image.Resampling.BILINEAR),
            ramp.rotate(90).resize((w, h), Image.Resampling.BILINEAR),
            Image.radial_gradient("L").resize((w, h), Image.Resampling.BILINEAR),
        ),
    )
    texture = Image.effect_noise((max(1, w // 16), max(1, h // 16)), 60).resize(
        (w, h), Image.Resampling.BICUBIC
    )
    base = Image.blend(base, Image.merge("RGB", (texture, texture.rotate(180), texture)), 0.35)
    draw = ImageDraw.Draw(base)
    short = min(w, h)
    for _ in range(60):
        x, y = rnd.randrange(w), rnd.randrange(h)
        size = rnd.randrange(max(2, short // 40), max(3, short // 6))
        colour = (rnd.randrange(256), rnd.randrange(256), rnd.randrange(256))
        if rnd.random() < 0.5:
            draw.ellipse((x, y, x + size, y + size), fill=colour)
        else:
            draw.line((x, y, rnd.randrange(w), rnd.randrange(h)), fill=colour, width=max(1, size // 20))
    grain = Image.effect_noise((w, h), noise).convert("RGB")
    return ImageChops.add(base, grain, scale=1.0, offset=-128)


@dataclass(frozen=True, slots=True)
class Input:
    name: str
    path: Path
    megapixels: float


def make_inputs(folder: Path) -> list[Input]:
    specs: list[tuple[str, tuple[int, int], str, dict[str, object]]] = [
        ("jpeg-2mp", (1920, 1080), "JPEG", {"quality": 90}),
        ("jpeg-12mp", (4000, 3000), "JPEG", {"quality": 90}),
        ("jpeg-24mp", (6000, 4000), "JPEG", {"quality": 90}),
        ("png-12mp", (4000, 3000), "PNG", {"compress_level": 6}),
        ("webp-12mp", (4000, 3000), "WEBP", {"quality": 85, "method": 2}),
    ]
    inputs: list[Input] = []
    for name, (w, h), fmt, params in specs:
        path = folder / f"{name}.{fmt.lower()}"
        photo_like(w, h, seed=len(inputs) + 1).save(path, format=fmt, **params)
        inputs.append(Input(name, path, w * h / 1e6))
    return inputs


# ---------------------------------------------------------------------------------------------
# The three contenders


def notebook(data: bytes) -> str:
    """The notebook's resize_and_encode, on bytes instead of a path."""
    with Image.open(io.BytesIO(data)) as img:
        img_resized = img.resize(OUT_SIZE, Image.LANCZOS)  # type: ignore[attr-defined]
        buffered = io.BytesIO()
        img_resized.save(buffered, format="PNG")
        return base64.b64encode(buffered.getvalue()).decode()


def project(data: bytes) -> bytes:
    from lambdas.resize.imaging import resize_and_encode
    from lambdas.shared.config import ImageSpec, ResizePolicy, pixel_limit_for_memory

    spec = ImageSpec(policy=ResizePolicy.STRETCH, max_pixels=pixel_limit_for_memory(MEMORY_MB))
    return resize_and_encode(data, spec).png


def cheapest_decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    if im.format == "JPEG":
        im.draft("RGB", OUT_SIZE)  # DCT scaling straight to >= the output size
    im.load()
    return im


def cheapest_encode(im: Image.Image) -> bytes:
    """The least work a valid PNG can take: no row filter, stored (uncompressed) deflate blocks."""
    rgb = im.convert("RGB")
    raw = rgb.tobytes()
    stride = rgb.width * 3
    rows = b"\x00" + b"\x00".join([raw[at : at + stride] for at in range(0, len(raw), stride)])
    header = struct.pack(">IIBBBBB", rgb.width, rgb.height, 8, 2, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(rows, 0)),
            _chunk(b"IEND", b""),
        )
    )


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))


def median_seconds(contenders: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median wall time of each contender, run round-robin so background load hits all alike."""
    for fn in contenders.values():
        fn()  # warm-up: plugin imports, first-touch allocations
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, fn in contenders.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def psnr(a: Image.Image, b: Image.Image) -> float:
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    mse = sum(ImageStat.Stat(diff).sum2) / (3 * a.width * a.height)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


# ---------------------------------------------------------------------------------------------
# Peak memory: one fresh interpreter per case


def _child(kind: str, path: str) -> None:
    """One case in a fresh interpreter. ``idle-*`` loads the same modules and file, runs nothing."""
    if kind in ("project", "idle-project"):
        import lambdas.resize.imaging  # noqa: F401
    data = Path(path).read_bytes()
    if kind == "baseline":
        notebook(data)
    elif kind == "project":
        project(data)
    del data
    print(json.dumps({"peak_mb": _vm_hwm_mb()}))


def _vm_hwm_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb(kind: str, path: Path) -> float | None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_image", "--child", kind, str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        print(f"  peak-RSS child {kind} {path.name} failed: {done.stderr.strip()[-300:]}", file=sys.stderr)
        return None
    return float(json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"])


# ---------------------------------------------------------------------------------------------
# Import time and layer size


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "POWERTOOLS_SERVICE_NAME": "bench",
            "POWERTOOLS_METRICS_NAMESPACE": "ImageCaptioning",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    return env


_IMPORT_PROBE = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"


def import_seconds(module: str, repeat: int = 3) -> tuple[float | None, str | None]:
    """Median in-process import time of ``module`` in fresh interpreters, or (None, error)."""
    times = []
    for _ in range(repeat):
        done = subprocess.run(
            [sys.executable, "-c", _IMPORT_PROBE.format(module=module)],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=_child_env(),
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines()
            return None, lines[-1] if lines else f"exit code {done.returncode}"
        times.append(float(done.stdout.strip().splitlines()[-1]))
    return statistics.median(times), None


def layer_zip_mb(workdir: Path) -> tuple[float | None, str | None]:
    """Build the layer with the stack's own bundler (pip for Lambda arm64 / Python 3.14, pruned), zip it."""
    from infra.bundling import PipLayerBundling
    from infra.config import LAMBDA_PYTHON_VERSION, LAYER_PLATFORMS, LAYER_REQUIREMENTS

    def run(command: Sequence[str]) -> None:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines()
            raise RuntimeError("pip failed: " + (lines[-1] if lines else f"exit code {done.returncode}"))

    bundler = PipLayerBundling(
        LAYER_REQUIREMENTS, python_version=LAMBDA_PYTHON_VERSION, platforms=LAYER_PLATFORMS, runner=run
    )
    out = workdir / "layer"
    try:
        bundler.try_bundle(str(out), image=None)  # type: ignore[arg-type]  # local bundling ignores the image
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
        return None, str(exc)
    archive = workdir / "layer.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(p for p in out.rglob("*") if p.is_file()):
            zf.write(file, file.relative_to(out))
    return archive.stat().st_size / 1e6, None


# ---------------------------------------------------------------------------------------------
# Run


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    megapixels: float
    file_mb: float
    baseline_s: float
    project_s: float
    floor_s: float
    psnr_db: float
    baseline_peak_mb: float | None
    project_peak_mb: float | None
    baseline_idle_mb: float | None  # same interpreter, modules and file loaded, no image work
    project_idle_mb: float | None
    output_bytes: int
    baseline_output_bytes: int

    @property
    def speedup(self) -> float:
        return self.baseline_s / self.project_s

    @property
    def vs_floor(self) -> float:
        return self.project_s / self.floor_s

    @property
    def baseline_net_mb(self) -> float | None:
        return _minus(self.baseline_peak_mb, self.baseline_idle_mb)

    @property
    def project_net_mb(self) -> float | None:
        return _minus(self.project_peak_mb, self.project_idle_mb)

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "megapixels": round(self.megapixels, 2),
            "baseline_s": round(self.baseline_s, 4),
            "project_s": round(self.project_s, 4),
            "floor_s": round(self.floor_s, 4),
            "speedup": round(self.speedup, 2),
            "vs_floor": round(self.vs_floor, 2),
            "psnr_db": round(min(self.psnr_db, PSNR_IDENTICAL), 2),
            "baseline_peak_mb": _round(self.baseline_peak_mb),
            "project_peak_mb": _round(self.project_peak_mb),
            "output_bytes": self.output_bytes,
            "baseline_net_mb": _round(self.baseline_net_mb),
            "project_net_mb": _round(self.project_net_mb),
        }


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def measure(item: Input, repeat: int, *, memory: bool) -> Row:
    data = item.path.read_bytes()
    baseline_out = base64.b64decode(notebook(data))
    project_out = project(data)
    output = Image.open(io.BytesIO(project_out))
    output.load()
    reference = Image.open(io.BytesIO(data)).resize(OUT_SIZE, Image.Resampling.LANCZOS)
    seconds = median_seconds(
        {
            "baseline": lambda: notebook(data),
            "project": lambda: project(data),
            "decode": lambda: cheapest_decode(data),
            "encode": lambda: cheapest_encode(output),
        },
        repeat,
    )
    return Row(
        name=item.name,
        megapixels=item.megapixels,
        file_mb=len(data) / 1e6,
        baseline_s=seconds["baseline"],
        project_s=seconds["project"],
        floor_s=seconds["decode"] + seconds["encode"],
        psnr_db=psnr(output, reference),
        baseline_peak_mb=peak_rss_mb("baseline", item.path) if memory else None,
        project_peak_mb=peak_rss_mb("project", item.path) if memory else None,
        baseline_idle_mb=peak_rss_mb("idle-baseline", item.path) if memory else None,
        project_idle_mb=peak_rss_mb("idle-project", item.path) if memory else None,
        output_bytes=len(project_out),
        baseline_output_bytes=len(baseline_out),
    )


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'input':<10} {'MP':>5} {'file MB':>7} {'baseline s':>10} {'project s':>9} {'floor s':>7} "
        f"{'speed-up':>8} {'vs floor':>8} {'PSNR dB':>7} {'peak MB base/proj':>17} {'net MB base/proj':>16} "
        f"{'out bytes':>9} {'base bytes':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        peaks = f"{_fmt(r.baseline_peak_mb, '.0f')}/{_fmt(r.project_peak_mb, '.0f')}"
        nets = f"{_fmt(r.baseline_net_mb, '.0f')}/{_fmt(r.project_net_mb, '.0f')}"
        print(
            f"{r.name:<10} {r.megapixels:>5.1f} {r.file_mb:>7.2f} {r.baseline_s:>10.3f} {r.project_s:>9.3f} "
            f"{r.floor_s:>7.3f} {r.speedup:>7.2f}x {r.vs_floor:>7.2f}x {min(r.psnr_db, PSNR_IDENTICAL):>7.2f}"
            f" {peaks:>17} {nets:>16} {r.output_bytes:>9,} {r.baseline_output_bytes:>10,}"
        )
    print("times: median of round-robin runs in this process; speed-up = baseline / project.")
    print("floor = cheapest decode at the needed size + an unfiltered, uncompressed PNG encode.")
    print("PSNR: project output vs full decode + LANCZOS of the same geometry (100 = identical pixels).")
    print("peak MB = VmHWM of a fresh interpreter per case; net = peak minus the same interpreter with")
    print("its modules and the file loaded but no image work (the project also loads TIFF/WebP: ~5 MB).")


def worst_case_bytes_per_pixel(folder: Path) -> float | None:
    """Peak RSS per pixel of the costliest legitimate input: an RGBA PNG (full decode, plus the
    premultiplied copy Pillow makes to resize alpha correctly). 24 MP, flat content: quick to make."""
    path = folder / "worst-rgba-24mp.png"
    im = Image.new("RGBA", (6000, 4000), (30, 60, 90, 255))
    ImageDraw.Draw(im).ellipse((1000, 500, 5000, 3500), fill=(200, 100, 50, 128))
    im.save(path, compress_level=1)
    del im
    peak = peak_rss_mb("project", path)
    idle = peak_rss_mb("idle-project", path)
    if peak is None or idle is None:
        return None
    return (peak - idle) * 1024 * 1024 / 24e6


def recommend_memory(rows: list[Row], bytes_per_pixel: float | None) -> dict[str, object]:
    """Resize function memory from the measured 24 MP peak (with headroom) and the worst case that
    the memory-derived pixel limit admits; never below one full vCPU."""
    from lambdas.shared.config import pixel_limit_for_memory

    peak = next((r.project_peak_mb for r in rows if r.name == "jpeg-24mp"), None)
    if peak is None:
        return {"memory_mb": MEMORY_MB, "reason": "24 MP peak not measured; 1769 MB = one full vCPU"}
    # Lambda's runtime, boto3 and Powertools add ~100 MB over our bare interpreter; 2x headroom.
    for_24mp = int(math.ceil((peak + 100) * 2 / 64) * 64)
    limit = pixel_limit_for_memory(MEMORY_MB)
    worst_mb = None if bytes_per_pixel is None else limit * bytes_per_pixel / 1024 / 1024 + 100
    return {
        "memory_mb": max(MEMORY_MB, for_24mp),
        "min_memory_mb_for_24mp": for_24mp,
        "jpeg_24mp_peak_mb": round(peak, 1),
        "worst_case_bytes_per_pixel": None if bytes_per_pixel is None else round(bytes_per_pixel, 2),
        "worst_case_mb_at_pixel_limit": None if worst_mb is None else round(worst_mb),
        "pixel_limit_mp": round(limit / 1e6, 1),
        "reason": "memory buys CPU: 1769 MB is one full vCPU and decoding is CPU-bound and single-threaded; "
        "its pixel limit (139.1 MP) admits an RGBA PNG whose decode still fits",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per case (median)")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-case subprocess RSS runs")
    parser.add_argument(
        "--no-layer", action="store_true", help="skip building the layer (needs the registry)"
    )
    parser.add_argument("--only", nargs="*", help="input names to run (default: all)")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0

    with tempfile.TemporaryDirectory(prefix="bench-image-") as tmp:
        folder = Path(tmp)
        print(f"generating inputs in {folder} ...", flush=True)
        inputs = [i for i in make_inputs(folder) if not args.only or i.name in args.only]
        rows = []
        for item in inputs:
            print(f"measuring {item.name} ...", flush=True)
            rows.append(measure(item, args.repeat, memory=not args.no_memory))
        print()
        print_table(rows)

        print()
        imports: dict[str, float | None] = {}
        import_errors: dict[str, str] = {}
        for module in HANDLERS:
            seconds, error = import_seconds(module)
            imports[module] = None if seconds is None else round(seconds, 3)
            if error:
                import_errors[module] = error
            print(f"import {module}: " + (f"{seconds:.3f} s" if seconds is not None else f"failed: {error}"))

        layer_mb, layer_error = (None, "skipped (--no-layer)") if args.no_layer else layer_zip_mb(folder)
        print("layer zip: " + (f"{layer_mb:.1f} MB" if layer_mb is not None else f"n/a ({layer_error})"))

        bytes_per_pixel = None if args.no_memory else worst_case_bytes_per_pixel(folder)
        memory = recommend_memory(rows, bytes_per_pixel)
        print(
            f"recommended resize memory: {memory['memory_mb']} MB ({memory['reason']}); "
            f"a 24 MP JPEG alone needs {memory.get('min_memory_mb_for_24mp')} MB with 2x headroom; "
            f"worst case at the pixel limit: {memory.get('worst_case_mb_at_pixel_limit')} MB "
            f"({memory.get('worst_case_bytes_per_pixel')} bytes/pixel, RGBA PNG)"
        )
        result: dict[str, object] = {
            "inputs": [r.as_json() for r in rows],
            "import_s": imports,
            "layer_zip_mb": None if layer_mb is None else round(layer_mb, 2),
        }
        if import_errors:
            result["import_errors"] = import_errors
        if layer_error:
            result["layer_error"] = layer_error
        result["resize_memory"] = memory
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
