"""``imgcap local --keep-running``: follow uploads made after the run (``imgcap upload``, ``imgcap
smoke``, ``aws s3 cp`` against the loopback endpoint) with the same progress display.

Each tick (once a second from ``loopback.keep_running``) lists ``images/``; a key that is new, or
whose ETag changed, enters the ledger as a new upload to follow. The ledger's refresh decides
which are final (caption, error record, DLQ, resize failure queue: the same rules as the run), and
one progress line (``imgcap.progress``) counts them. A state once reached is kept (a later
cleanup that deletes the caption does not undo it); an upload deleted before it was final counts
as ``deleted``. The functions' logs go on being written to
OUT/logs as they happen (the log files are line-buffered).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

from imgcap.local.ledger import Ledger, Upload
from imgcap.ops.bucket import list_sources
from imgcap.progress import Progress


class Follower:
    """New uploads in waves: a wave starts with the first new upload after a quiet spell, takes in
    every upload that arrives while it runs, and ends when all of them are final, with one line
    ``new uploads done: N (captioned a, rejected b)``."""

    def __init__(self, ledger: Ledger, s3: Any, bucket: str, stream: TextIO) -> None:
        self._ledger = ledger
        self._s3 = s3
        self._bucket = bucket
        self._stream = stream
        self._wave: set[str] = set()  # keys followed in the current wave
        self._final: dict[str, str] = {}  # key -> the final state it reached
        self._present: set[str] = set()
        self._progress: Progress | None = None

    def _discover(self) -> None:
        known = {u.key: u.etag for u in self._ledger.uploads.values()}
        listing = list_sources(self._s3, self._bucket)
        self._present = {o.key for o in listing}
        for obj in listing:
            if known.get(obj.key) == obj.etag:
                continue
            upload = Upload(key=obj.key, path=Path(), size=obj.size, etag=obj.etag, uploaded_at=time.time())
            self._ledger.add_upload(upload)
            self._wave.add(obj.key)
            self._final.pop(obj.key, None)  # a new version starts again

    def tick(self) -> None:
        try:
            self._discover()
            if not self._wave:
                return
            self._ledger.refresh()
        except Exception as exc:  # a loopback hiccup must not end --keep-running
            self._stream.write(f"(following new uploads: refresh failed, retrying: {exc})\n")
            return
        states = self._ledger.states()
        for key in self._wave - self._final.keys():
            state = states.get(key) or (None if key in self._present else "deleted")
            if state is not None:
                self._final[key] = state
        counts = Counter(self._final.get(k, "waiting") for k in self._wave)
        if self._progress is None:
            self._progress = Progress("new uploads", total=len(self._wave), stream=self._stream, unit="img")
        self._progress.set_total(len(self._wave))
        fields = [f"{state} {n}" for state, n in sorted(counts.items())]
        self._progress.update_to(len(self._wave) - counts.get("waiting", 0), fields)
        if not counts.get("waiting"):
            self._progress.close()
            self._stream.write(f"new uploads done: {len(self._wave)} ({', '.join(fields)})\n")
            self._stream.flush()
            self._progress = None
            self._wave = set()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.close()
