"""A loopback stand-in for the Bedrock runtime's ``Converse`` API (offline captions, a real quota).

It speaks the REST shape boto3's ``bedrock-runtime`` client sends and parses: ``POST
/model/{modelId}/converse`` with a JSON body whose image arrives base64 in
``messages[].content[].image.source.bytes``; it answers with ``output.message.content[].text``,
``stopReason``, ``usage`` and ``metrics.latencyMs``. Errors are an HTTP status, a JSON
``{"message": ...}`` body and the ``x-amzn-ErrorType`` header botocore reads the error code from.

- The requests-per-minute quota is real: a sliding window over accepted requests; over it the call
  gets HTTP 429 ``ThrottlingException``, exactly what an account quota does.
- Faults (``imgcap.local.faults``) are injected on top, by share or by script.
- The caption describes what can be measured in the image (size, orientation, letterbox bars,
  dominant colour names, brightness, amount of detail) and says that it comes from the stand-in.
- Token usage is a deterministic estimate; the latency follows the answer's length like a real
  model's (``imgcap.local.latency``: ``nova-pro`` by default, ``fast`` for quick tests).

Every call is counted per outcome and every answered call per image (SHA-256 of the image
bytes), so the local runtime can report model calls, throttles and duplicate paid calls.

Over 500 lines: one HTTP stand-in with its image measures, answers (text and tool use), quota and
fault plan; the latency model (``latency.py``) and the embeddings answers live apart.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import math
import random
import re
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from imgcap.local.faults import FaultKind, FaultPlan, FaultSpec
from imgcap.local.latency import FAST, StandinLatency

LOOPBACK = "127.0.0.1"
STANDIN_MARK = "Offline stand-in caption (not a model)"
MAX_BODY_BYTES = 30 * 1024 * 1024
IMAGE_FORMATS = ("png", "jpeg", "gif", "webp")

_PATH = re.compile(r"^/model/(?P<model>[^/]+)/converse$")
_INVOKE_PATH = re.compile(r"^/model/(?P<model>[^/]+)/invoke$")  # embeddings (embeddings_standin)

# A small named palette: nearest colour (RGB distance) names each sampled pixel.
PALETTE: dict[str, tuple[int, int, int]] = {
    "black": (10, 10, 10),
    "dark grey": (70, 70, 70),
    "grey": (128, 128, 128),
    "light grey": (195, 195, 195),
    "white": (248, 248, 248),
    "red": (200, 35, 35),
    "dark red": (115, 20, 25),
    "orange": (240, 140, 30),
    "yellow": (240, 220, 50),
    "beige": (225, 205, 160),
    "brown": (120, 75, 35),
    "olive": (120, 120, 30),
    "green": (50, 165, 60),
    "dark green": (25, 80, 35),
    "teal": (20, 130, 130),
    "sky blue": (125, 185, 235),
    "light blue": (185, 215, 240),
    "steel blue": (60, 110, 160),
    "blue": (35, 85, 205),
    "navy": (18, 28, 85),
    "purple": (120, 55, 160),
    "pink": (240, 150, 190),
}


# --- what can be measured in an image (pure) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImageFacts:
    width: int
    height: int
    image_format: str
    orientation: str  # landscape | portrait | square
    content_width: int  # the picture inside letterbox/pillarbox bars (== width/height without bars)
    content_height: int
    bars: str | None  # "pillarbox" (left+right), "letterbox" (top+bottom) or None
    bar_colour: str | None
    colours: tuple[tuple[str, float], ...]  # (name, share of content pixels), largest first
    brightness: str  # dark | medium | bright
    mean_luma: float
    detail: str  # flat | moderate | busy


class UnreadableImage(ValueError):
    """The image bytes are not an image Pillow can open."""


def orientation_of(width: int, height: int) -> str:
    if width > height * 1.05:
        return "landscape"
    if height > width * 1.05:
        return "portrait"
    return "square"


def nearest_colour(rgb: tuple[int, int, int]) -> str:
    r, g, b = rgb
    best, best_d = "black", math.inf
    for name, (pr, pg, pb) in PALETTE.items():
        d = (r - pr) ** 2 + (g - pg) ** 2 + (b - pb) ** 2
        if d < best_d:
            best, best_d = name, d
    return best


_PALETTE_NAMES = tuple(PALETTE)


def _colour_counts(rgb: Any) -> Counter[str]:
    """Pixels per palette name: each pixel mapped to its nearest palette colour (in Pillow)."""
    from PIL import Image

    flat = [c for colour in PALETTE.values() for c in colour]
    palette = Image.new("P", (1, 1))
    palette.putpalette(flat + list(PALETTE[_PALETTE_NAMES[0]]) * (256 - len(PALETTE)))
    mapped = rgb.quantize(palette=palette, dither=Image.Dither.NONE)
    counts: Counter[str] = Counter()
    for n, index in mapped.getcolors(256) or []:
        counts[_PALETTE_NAMES[index] if index < len(_PALETTE_NAMES) else _PALETTE_NAMES[0]] += n
    return counts


def _close(a: tuple[int, int, int], b: tuple[int, int, int], tolerance: int = 14) -> bool:
    return max(abs(a[0] - b[0]), abs(a[1] - b[1]), abs(a[2] - b[2])) <= tolerance


def _bars(pixels: Sequence[tuple[int, int, int]], w: int, h: int) -> tuple[int, int, int, int]:
    """Uniform border (the corner's colour) on each side: (left, top, right, bottom) in sample px."""
    corner = pixels[0]

    def column_is_bar(x: int) -> bool:
        return all(_close(pixels[y * w + x], corner) for y in range(h))

    def row_is_bar(y: int) -> bool:
        return all(_close(pixels[y * w + x], corner) for x in range(w))

    left = 0
    while left < w and column_is_bar(left):
        left += 1
    if left == w:  # the whole image is one flat colour: no bars, just a flat picture
        return 0, 0, 0, 0
    right = 0
    while right < w - left and column_is_bar(w - 1 - right):
        right += 1
    top = 0
    while top < h and row_is_bar(top):
        top += 1
    bottom = 0
    while bottom < h - top and row_is_bar(h - 1 - bottom):
        bottom += 1
    return left, top, right, bottom


def analyse_image(data: bytes, sample_long_side: int = 160) -> ImageFacts:
    """Measure an image: geometry, bars, colours, brightness, detail. Raises ``UnreadableImage``."""
    from PIL import Image, ImageChops, ImageStat, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            image_format = (img.format or "unknown").lower()
            width, height = img.size
            img.seek(0)
            rgb = img.convert("RGBA") if img.mode in ("RGBA", "LA", "PA", "P") else img.convert("RGB")
            if rgb.mode == "RGBA":
                canvas = Image.new("RGB", rgb.size, (255, 255, 255))
                canvas.paste(rgb, mask=rgb.getchannel("A"))
                rgb = canvas
            scale = sample_long_side / max(width, height)
            sw, sh = max(1, round(width * min(1.0, scale))), max(1, round(height * min(1.0, scale)))
            small = rgb.resize((sw, sh), Image.Resampling.BOX)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise UnreadableImage(f"the image could not be decoded: {exc}") from exc

    raw = small.tobytes()
    pixels = list(zip(raw[0::3], raw[1::3], raw[2::3], strict=True))
    left, top, right, bottom = _bars(pixels, sw, sh)
    min_bar = max(1, round(0.02 * sw)), max(1, round(0.02 * sh))
    bars: str | None = None
    if left >= min_bar[0] and right >= min_bar[0]:
        bars = "pillarbox"
        top = bottom = 0
    elif top >= min_bar[1] and bottom >= min_bar[1]:
        bars = "letterbox"
        left = right = 0
    else:
        left = top = right = bottom = 0
    cw = round((sw - left - right) * width / sw)
    ch = round((sh - top - bottom) * height / sh)

    # The measures run in Pillow's C code (a run captures hundreds of images a minute in the
    # stand-in's process): nearest palette colour per pixel, luma, neighbour differences.
    content = small.crop((left, top, sw - right, sh - bottom))
    names = _colour_counts(content)
    total = max(1, content.width * content.height)
    colours = tuple((name, n / total) for name, n in names.most_common())
    luma = content.convert("L")  # ITU-R 601-2: 0.299 R + 0.587 G + 0.114 B
    mean_luma = ImageStat.Stat(luma).mean[0]
    brightness = "dark" if mean_luma < 85 else "bright" if mean_luma > 170 else "medium"
    roughness = 0.0
    if luma.width > 1:
        left_cols = luma.crop((0, 0, luma.width - 1, luma.height))
        right_cols = luma.crop((1, 0, luma.width, luma.height))
        roughness = ImageStat.Stat(ImageChops.difference(left_cols, right_cols)).mean[0]
    detail = "flat" if roughness < 3 else "moderate" if roughness < 14 else "busy"
    return ImageFacts(
        width=width,
        height=height,
        image_format=image_format,
        orientation=orientation_of(width, height),
        content_width=cw,
        content_height=ch,
        bars=bars,
        bar_colour=nearest_colour(pixels[0]) if bars else None,
        colours=colours,
        brightness=brightness,
        mean_luma=round(mean_luma, 1),
        detail=detail,
    )


def _join(names: Sequence[str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def describe(facts: ImageFacts) -> str:
    """The stand-in's caption: only what was measured, and a plain note that it is not a model."""
    main = [name for name, share in facts.colours if share >= 0.12][:3] or [facts.colours[0][0]]
    if facts.colours and facts.colours[0][1] >= 0.5:
        palette = f"mostly {main[0]}" + (f", with some {_join(main[1:])}" if len(main) > 1 else "")
    else:
        palette = f"a mix of {_join(main)}"
    detail = {
        "flat": "large flat areas with little detail",
        "moderate": "a moderate amount of detail",
        "busy": "a lot of fine detail and edges",
    }[facts.detail]
    article = "an" if facts.brightness[0] in "aeiou" else "a"
    parts = [
        f"{STANDIN_MARK}: {article} {facts.brightness} {facts.orientation} image, "
        f"{facts.width}x{facts.height}, {palette}; {detail}."
    ]
    if facts.bars:
        inner = orientation_of(facts.content_width, facts.content_height)
        sides = "left and right" if facts.bars == "pillarbox" else "top and bottom"
        parts.append(
            f"The picture itself is a {inner} area of about {facts.content_width}x{facts.content_height} "
            f"with {facts.bar_colour} bars at the {sides}."
        )
    else:
        parts.append("The picture fills the whole frame.")
    return " ".join(parts)


def describe_in_detail(facts: ImageFacts, words: int) -> str:
    """As long as a model's detailed description: the caption, then measured facts, ``words`` long."""
    facts_said = [
        f"The {name} areas take up about {share:.0%} of the picture." for name, share in facts.colours[:6]
    ]
    facts_said += [
        f"Its mean brightness is {facts.mean_luma:g} on a scale of 0 to 255: {facts.brightness}.",
        f"The frame is {facts.orientation}, {facts.width} pixels wide and {facts.height} pixels high.",
        f"The picture area measures about {facts.content_width}x{facts.content_height} pixels.",
        f"The amount of detail is {facts.detail}, judged from the change in brightness between neighbours.",
        "A model would name objects, people, text and the setting here; the stand-in only repeats "
        "what it measured, so that its answer is as long as a detailed description.",
    ]
    out = describe(facts).split()
    i = 0
    while len(out) < words:
        out += facts_said[i % len(facts_said)].split()
        i += 1
    return " ".join(out[:words])


# --- the answer: a paragraph, or the forced tool's input (caption-format structured) ------------

ALT_TEXT_MAX = 125
# Alt text, tags and the JSON around them: the detailed description is this much shorter in a tool
# answer, so a structured answer of a detailed length still fits maxTokens 300.
STRUCTURED_OVERHEAD_TOKENS = 70


def alt_text_for(facts: ImageFacts) -> str:
    """One plain sentence of at most 125 characters, from what was measured."""
    names = [name for name, share in facts.colours if share >= 0.12][:2] or [facts.colours[0][0]]
    framed = f", framed by {facts.bar_colour} bars" if facts.bars else ""
    shape = orientation_of(facts.content_width, facts.content_height)  # the picture, not the frame
    text = f"A {facts.brightness} {shape} scene in {_join(names)}{framed} (stand-in alt text)."
    if len(text) <= ALT_TEXT_MAX:
        return text
    return text[: ALT_TEXT_MAX - 1].rsplit(" ", 1)[0] + "."


def tags_for(facts: ImageFacts) -> list[str]:
    """3-10 lowercase keywords: orientation, brightness, detail, main colours, bars, the stand-in mark."""
    detail = {"flat": "minimal", "moderate": "textured", "busy": "detailed"}[facts.detail]
    colours = [name for name, share in facts.colours if share >= 0.08][:4]
    tags = [orientation_of(facts.content_width, facts.content_height), facts.brightness, detail, *colours]
    if facts.bars:
        tags.append(facts.bars)
    tags.append("stand-in")
    return list(dict.fromkeys(tags))[:10]


def structured_input(
    facts: ImageFacts, *, invalid: bool = False, description: str | None = None
) -> dict[str, Any]:
    """The caption tool's input; ``invalid`` (the invalid_tool fault) breaks three of its rules."""
    description = description or describe(facts)
    if invalid:
        return {
            "description": description,
            "alt_text": "Image of " + describe(facts),  # a preamble, and far over 125 characters
            "tags": ["Stand-in"],  # one tag; at least three are required
        }  # and text_in_image is missing
    return {
        "description": description,
        "alt_text": alt_text_for(facts),
        "tags": tags_for(facts),
        "text_in_image": "",  # the stand-in does not read text
    }


def answer_content(
    request: ConverseRequest,
    facts: ImageFacts,
    *,
    invalid_tool: bool = False,
    description: str | None = None,
) -> tuple[list[dict[str, Any]], str, int]:
    """(message content, stopReason, output tokens) for a request; one token per word.

    Over maxTokens, a text answer is cut there; a tool answer becomes its cut-off JSON as text,
    the way a model that ran out of tokens mid-call leaves no usable tool input.
    """
    if request.tool_name is None:
        words = (description or describe(facts)).split()
        if len(words) > request.max_tokens:
            return [{"text": " ".join(words[: request.max_tokens])}], "max_tokens", request.max_tokens
        return [{"text": " ".join(words)}], "end_turn", len(words)
    tool_input = structured_input(facts, invalid=invalid_tool, description=description)
    words = json.dumps(tool_input).split()
    if len(words) > request.max_tokens:
        return [{"text": " ".join(words[: request.max_tokens])}], "max_tokens", request.max_tokens
    use = {"toolUseId": f"tooluse_{uuid.uuid4().hex[:22]}", "name": request.tool_name, "input": tool_input}
    return [{"toolUse": use}], "tool_use", len(words)


def estimate_input_tokens(width: int, height: int, text: str) -> int:
    """About one token per 750 pixels of image plus ~1.3 per word of text (deterministic)."""
    return math.ceil(width * height / 750) + math.ceil(len(text.split()) * 1.3)


# --- the request ------------------------------------------------------------------------------


class ValidationProblem(ValueError):
    """The request is malformed the way Bedrock reports with ValidationException."""


@dataclass(frozen=True, slots=True)
class ConverseRequest:
    model_id: str
    images: tuple[bytes, ...]
    text: str
    max_tokens: int
    tool_name: str | None = None  # toolConfig.toolChoice.tool.name: answer with that tool's toolUse
    service_tier: str | None = None  # serviceTier.type, echoed in the answer as Bedrock does


def _content(messages: list[Any], system: Any) -> tuple[list[bytes], list[str]]:
    images: list[bytes] = []
    texts = [s["text"] for s in system or [] if isinstance(s, dict) and isinstance(s.get("text"), str)]
    for message in messages:
        for block in (message or {}).get("content") or []:
            if not isinstance(block, dict):
                continue
            if isinstance(block.get("text"), str):
                texts.append(block["text"])
            image = block.get("image")
            if not isinstance(image, dict):
                continue
            if image.get("format") not in IMAGE_FORMATS:
                raise ValidationProblem(f"Unsupported image format {image.get('format')!r}.")
            raw = (image.get("source") or {}).get("bytes") or ""
            try:
                images.append(base64.b64decode(raw, validate=True))
            except (binascii.Error, ValueError, TypeError) as exc:
                raise ValidationProblem("The provided image bytes are not valid base64.") from exc
    return images, texts


def parse_converse(model_id: str, body: bytes) -> ConverseRequest:
    """Validate a Converse request body; raises ``ValidationProblem`` with Bedrock-like messages."""
    try:
        doc = json.loads(body or b"{}")
    except ValueError as exc:
        raise ValidationProblem("Malformed input request, please reformat your input and try again.") from exc
    if not isinstance(doc, dict):
        raise ValidationProblem("Malformed input request: the body must be a JSON object.")
    if not model_id.strip():
        raise ValidationProblem("The provided model identifier is invalid.")
    messages = doc.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValidationProblem("A conversation must start with a user message.")
    if not isinstance(messages[-1], dict) or messages[-1].get("role") != "user":
        raise ValidationProblem("A conversation must end with a user message.")
    images, texts = _content(messages, doc.get("system"))
    max_tokens = (doc.get("inferenceConfig") or {}).get("maxTokens", 5000)
    if not isinstance(max_tokens, int) or not 1 <= max_tokens <= 10_000:
        raise ValidationProblem("inferenceConfig.maxTokens must be between 1 and 10000.")
    return ConverseRequest(
        model_id=model_id,
        images=tuple(images),
        text=" ".join(texts),
        max_tokens=max_tokens,
        tool_name=forced_tool(doc),
        service_tier=str((doc.get("serviceTier") or {}).get("type") or "") or None,
    )


def forced_tool(doc: Mapping[str, Any]) -> str | None:
    """The tool a request forces (``toolChoice: {tool: {name}}``), if it names one of its tools."""
    config = doc.get("toolConfig")
    if not isinstance(config, dict):
        return None
    name = ((config.get("toolChoice") or {}).get("tool") or {}).get("name")
    tools = [((t or {}).get("toolSpec") or {}).get("name") for t in config.get("tools") or []]
    if not isinstance(name, str) or name not in tools:
        raise ValidationProblem("The toolChoice names a tool that is not in toolConfig.tools.")
    return name


# --- quota ------------------------------------------------------------------------------------


class SlidingWindowQuota:
    """At most ``limit`` accepted requests in any ``window_s`` seconds (thread-safe)."""

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("quota limit must be >= 1 and the window > 0")
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._accepted: deque[float] = deque()
        self._lock = threading.Lock()
        self.peak = 0

    def try_acquire(self) -> float | None:
        """A slot token (its timestamp) if under the quota, else None."""
        with self._lock:
            now = self._clock()
            while self._accepted and self._accepted[0] <= now - self.window_s:
                self._accepted.popleft()
            if len(self._accepted) >= self.limit:
                return None
            self._accepted.append(now)
            self.peak = max(self.peak, len(self._accepted))
            return now

    def release(self, token: float) -> None:
        """Give a slot back (a request rejected after all, e.g. an injected throttle)."""
        with self._lock, suppress(ValueError):
            self._accepted.remove(token)


class TokensQuota:
    """A tokens-per-minute quota counted the way Bedrock does (thread-safe).

    A request books its input tokens plus ``maxTokens`` when it starts and is settled to its real
    usage when it ends (the Bedrock user guide's "How tokens are counted" for quotas). The quota
    refills at ``tpm`` / 60 per second and holds at most one minute's worth, like a token bucket.
    """

    def __init__(
        self, tpm: float, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if tpm <= 0 or window_s <= 0:
            raise ValueError("tokens quota and window must be positive")
        self.capacity = tpm * window_s / 60.0
        self.rate_per_s = tpm / 60.0
        self._clock = clock
        self._level = self.capacity
        self._stamp = clock()
        self._lock = threading.Lock()
        self.booked = 0.0  # everything booked net of refunds: the tokens the quota counted

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate_per_s)
        self._stamp = now

    def try_book(self, tokens: float) -> bool:
        with self._lock:
            self._refill()
            if self._level < tokens:
                return False
            self._level -= tokens
            self.booked += tokens
            return True

    def settle(self, booked: float, used: float) -> None:
        with self._lock:
            self._refill()
            self._level = min(self.capacity, self._level + booked - used)
            self.booked += used - booked


def quota_limit(rpm: float, window_s: float) -> int:
    """Requests allowed per window for a requests-per-minute quota (at least one)."""
    return max(1, math.floor(rpm * window_s / 60.0 + 1e-9))


# --- the server -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StandinConfig:
    rpm: float | None = 120.0  # the account quota; None = unlimited
    tpm: float | None = None  # the tokens-per-minute quota; None = unlimited
    window_s: float = 60.0  # quota window; tests shrink it (rpm is scaled to the window)
    latency: StandinLatency = FAST  # how long an answer takes and how long it is (imgcap.local.latency)
    faults: FaultSpec = field(default_factory=FaultSpec)
    timeout_hold_s: float = 3.0  # a "timeout" fault holds the request this long (> client read timeout)
    seed: int = 0


OUTCOMES = (
    "ok",
    "throttled_quota",
    "throttled_injected",
    "throttled_tokens",
    "server_error",
    "timeout",
    "validation",
    "model_error",
    "invalid_request",
    "batch_ok",  # a batch job's record answered (paid, at the batch price; no quota, no wait)
    "batch_error",  # a batch job's record the model could not take (an error line)
)


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    body: dict[str, Any] | None
    error_type: str | None = None


_ERRORS: Mapping[str, tuple[int, str, str]] = {
    "throttled_quota": (429, "ThrottlingException", "Too many requests, please wait before trying again."),
    "throttled_injected": (429, "ThrottlingException", "Too many requests, please wait before trying again."),
    "throttled_tokens": (429, "ThrottlingException", "Too many tokens, please wait before trying again."),
    "server_unavailable": (503, "ServiceUnavailableException", "The service is temporarily unavailable."),
    "server_internal": (500, "InternalServerException", "An internal server error occurred. Retry."),
    "validation": (
        400,
        "ValidationException",
        "Unable to process the provided image: it does not adhere to the expected standards.",
    ),
    "model_error": (424, "ModelErrorException", "The model produced an error while processing the request."),
}


class BedrockStandin:
    """The stand-in's state: quota, fault plan, counters. ``serve()`` puts it on a loopback port."""

    def __init__(self, config: StandinConfig | None = None) -> None:
        self.config = config or StandinConfig()
        self.quota = (
            SlidingWindowQuota(quota_limit(self.config.rpm, self.config.window_s), self.config.window_s)
            if self.config.rpm
            else None
        )
        self.tokens = TokensQuota(self.config.tpm, self.config.window_s) if self.config.tpm else None
        self.faults = FaultPlan(self.config.faults)
        self._rng = random.Random(self.config.seed)  # noqa: S311 - simulated latency
        self._lock = threading.Lock()
        self._outcomes: Counter[str] = Counter()
        self._paid_by_image: Counter[str] = Counter()
        self._server_errors = 0
        self._input_tokens = 0
        self._output_tokens = 0
        self._first_call: float | None = None
        self._last_ok: float | None = None
        self.stopping = threading.Event()
        self.url = ""
        # Bedrock's batch control plane (``batch_standin.BatchControlPlane``), when a run has one.
        self.control_plane: Any = None

    # -- bookkeeping

    def _count(self, outcome: str) -> None:
        with self._lock:
            self._outcomes[outcome] += 1

    def stats(self) -> dict[str, Any]:
        with self._lock:
            outcomes = {name: self._outcomes.get(name, 0) for name in OUTCOMES}
            paid = dict(self._paid_by_image)
            return {
                "requests": sum(self._outcomes.values()),
                "outcomes": outcomes,
                "paid_calls": outcomes["ok"] + outcomes["batch_ok"],
                "throttled": outcomes["throttled_quota"]
                + outcomes["throttled_injected"]
                + outcomes["throttled_tokens"],
                "paid_by_image": paid,
                "duplicate_paid_calls": sum(n - 1 for n in paid.values() if n > 1),
                "input_tokens": self._input_tokens,
                "output_tokens": self._output_tokens,
                "first_call_at": self._first_call,
                "last_ok_at": self._last_ok,
                "quota_limit": self.quota.limit if self.quota else None,
                "quota_window_s": self.quota.window_s if self.quota else None,
                "quota_peak": self.quota.peak if self.quota else None,
                "tokens_quota_per_minute": self.config.tpm,
                "fault_script_remaining": self.faults.script_remaining,
            }

    # -- one request

    def converse(self, model_id: str, body: bytes) -> _Reply | None:  # noqa: PLR0912 - one branch per fault
        """Handle one Converse call; None means 'hold and never answer' (a read-timeout fault)."""
        with self._lock:
            if self._first_call is None:
                self._first_call = time.time()
        try:
            request = parse_converse(model_id, body)
            if not request.images:
                raise ValidationProblem("This stand-in captions images: the request has no image block.")
        except ValidationProblem as exc:
            self._count("invalid_request")
            return _Reply(400, {"message": str(exc)}, "ValidationException")

        token = self.quota.try_acquire() if self.quota else 0.0
        if token is None:
            return self._error("throttled_quota")
        fault = self.faults.next_fault()
        if fault is FaultKind.THROTTLE:
            if self.quota:
                self.quota.release(token)
            return self._error("throttled_injected")
        if fault is FaultKind.SERVER:
            with self._lock:
                self._server_errors += 1
                kind = "server_unavailable" if self._server_errors % 2 else "server_internal"
            self._count("server_error")
            status, error_type, message = _ERRORS[kind]
            return _Reply(status, {"message": message}, error_type)
        if fault is FaultKind.TIMEOUT:
            self._count("timeout")
            return None
        if fault is FaultKind.VALIDATION:
            return self._error("validation")
        if fault is FaultKind.MODEL:
            return self._error("model_error")
        try:
            facts = analyse_image(request.images[0])
        except UnreadableImage as exc:
            self._count("invalid_request")
            return _Reply(400, {"message": f"The provided image is not valid: {exc}"}, "ValidationException")
        booked = self._input_tokens_of(request, facts) + request.max_tokens
        if self.tokens is not None and not self.tokens.try_book(booked):
            if self.quota and token is not None:
                self.quota.release(token)
            return self._error("throttled_tokens")
        return self._answer(request, facts, booked, invalid_tool=fault is FaultKind.INVALID_TOOL)

    @staticmethod
    def _input_tokens_of(request: ConverseRequest, facts: ImageFacts) -> int:
        images = sum(estimate_input_tokens(facts.width, facts.height, "") for _ in request.images)
        return images + estimate_input_tokens(0, 0, request.text)

    def _error(self, outcome: str) -> _Reply:
        self._count(outcome)
        status, error_type, message = _ERRORS[outcome]
        return _Reply(status, {"message": message}, error_type)

    def answer_record(self, model_id: str, model_input: Mapping[str, Any]) -> dict[str, Any]:
        """One record of a batch job (``batch_standin``): ``{"modelOutput": <Converse response>}``
        or ``{"error": {"errorCode": 400, "errorMessage": ...}}`` as Bedrock writes an output line.
        Outside the per-minute quotas and without the per-call wait (a job runs at Bedrock's pace);
        counted as a paid call of the image, so a run can tell whether online and batch both paid."""
        try:
            request = parse_converse(model_id, json.dumps(model_input).encode("utf-8"))
            if not request.images:
                raise ValidationProblem("This stand-in captions images: the request has no image block.")
            facts = analyse_image(request.images[0])
        except (ValidationProblem, UnreadableImage) as exc:
            self._count("batch_error")
            return {"error": {"errorCode": 400, "errorMessage": f"The provided image is not valid: {exc}"}}
        reply = self._answer(request, facts, 0, wait=False, outcome="batch_ok")
        return {"modelOutput": reply.body}

    def _answer(
        self,
        request: ConverseRequest,
        facts: ImageFacts,
        booked: int,
        *,
        invalid_tool: bool = False,
        wait: bool = True,
        outcome: str = "ok",
    ) -> _Reply:
        started = time.monotonic()
        latency = self.config.latency
        with self._lock:
            length = latency.answer_tokens(self._rng)
        if length is not None and request.tool_name is not None:
            length = max(60, length - STRUCTURED_OVERHEAD_TOKENS)  # the whole tool answer fits maxTokens
        description = describe(facts) if length is None else describe_in_detail(facts, length)
        content, stop_reason, output_tokens = answer_content(
            request, facts, invalid_tool=invalid_tool, description=description
        )
        with self._lock:
            delay = latency.seconds(self._rng, output_tokens)  # the usage below is what it was drawn from
        if delay > 0 and wait:
            self.stopping.wait(delay)
        input_tokens = self._input_tokens_of(request, facts)
        if self.tokens is not None and booked:
            self.tokens.settle(booked, input_tokens + output_tokens)
        sha = hashlib.sha256(request.images[0]).hexdigest()
        with self._lock:
            self._outcomes[outcome] += 1
            self._paid_by_image[sha] += 1
            self._input_tokens += input_tokens
            self._output_tokens += output_tokens
            self._last_ok = time.time()
        latency_ms = round((time.monotonic() - started) * 1000)
        return _Reply(
            200,
            {
                "output": {"message": {"role": "assistant", "content": content}},
                "stopReason": stop_reason,
                "usage": {
                    "inputTokens": input_tokens,
                    "outputTokens": output_tokens,
                    "totalTokens": input_tokens + output_tokens,
                },
                "metrics": {"latencyMs": latency_ms},
                **({"serviceTier": {"type": request.service_tier}} if request.service_tier else {}),
            },
        )

    # -- serving

    @contextmanager
    def serve(self) -> Iterator[BedrockStandin]:
        """Listen on 127.0.0.1 (a free port) for the duration of the block; ``self.url`` is set."""
        server = _Server((LOOPBACK, 0), _Handler)
        server.standin = self
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="bedrock-standin", daemon=True
        )
        thread.start()
        self.url = f"http://{LOOPBACK}:{server.server_address[1]}"
        try:
            yield self
        finally:
            self.stopping.set()
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    standin: BedrockStandin


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the runtime reports calls through the stand-in's counters."""

    def _send(self, reply: _Reply) -> None:
        payload = json.dumps(reply.body or {}).encode("utf-8")
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        if reply.error_type:
            self.send_header("x-amzn-ErrorType", reply.error_type)
        self.end_headers()
        self.wfile.write(payload)

    def _control_plane(self, method: str, body: bytes = b"") -> bool:
        """Serve a batch control-plane call (Create/Get/List/Stop a model invocation job)."""
        plane = self.server.standin.control_plane
        if plane is None:
            return False
        url = urlsplit(self.path)
        reply = plane.handle(method, url.path, url.query, body)
        if reply is None:
            return False
        status, payload, error_type = reply
        self._send(_Reply(status, payload, error_type))
        return True

    def do_GET(self) -> None:
        if self._control_plane("GET"):
            return
        if urlsplit(self.path).path == "/_standin/stats":
            stats = self.server.standin.stats()
            stats.pop("paid_by_image", None)
            self._send(_Reply(200, stats))
        else:
            self._send(_Reply(404, {"message": "not found"}, "UnknownOperationException"))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._send(_Reply(413, {"message": "Request too large"}, "ValidationException"))
            return
        body = self.rfile.read(length) if length else b""
        if self._control_plane("POST", body):
            return
        invoke = _INVOKE_PATH.match(urlsplit(self.path).path)
        if invoke:
            self._send(_embeddings_reply(unquote(invoke.group("model")), body))
            return
        match = _PATH.match(urlsplit(self.path).path)
        if not match:
            self._send(_Reply(404, {"message": "Unknown operation"}, "UnknownOperationException"))
            return
        standin = self.server.standin
        reply = standin.converse(unquote(match.group("model")), body)
        if reply is None:
            # Read-timeout fault: hold past the client's read timeout, then drop the connection.
            standin.stopping.wait(standin.config.timeout_hold_s)
            self.close_connection = True
            return
        try:
            self._send(reply)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def _embeddings_reply(model_id: str, body: bytes) -> _Reply:
    """InvokeModel of an embeddings model: the stand-in embeddings (no quota, no faults)."""
    from imgcap.local.embeddings_standin import EmbeddingRequestError, answer

    try:
        return _Reply(200, answer(model_id, body))
    except EmbeddingRequestError as exc:
        return _Reply(400, {"message": str(exc)}, "ValidationException")
