"""The analytics store: immutable Parquet segments of clicks and of conversion versions.

Each segment covers a half-open time window named in its file name (`<start_ms>-<end_ms>.parquet`),
written to a temporary name and renamed, so a reader never sees half a file. The windows of the live
segments tile time without overlap; the end of the last one is the feed's cursor, so the files are
the whole state. Compaction writes one file over many windows and then deletes them; a reader that
meets both (a crash between the two steps) keeps the widest and ignores what it covers.
"""

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CLICKS = "clicks"
REMOVAL_GRACE_SECONDS = 120.0
CONVERSIONS = "conversions"
LANDER_CLICKS = "lander_clicks"
KINDS = (CLICKS, CONVERSIONS, LANDER_CLICKS)


@dataclass(frozen=True, slots=True, order=True)
class Segment:
    start_ms: int
    end_ms: int
    path: Path

    @property
    def name(self) -> str:
        return f"{self.start_ms}-{self.end_ms}.parquet"


def _parse(path: Path) -> Segment | None:
    stem = path.name.removesuffix(".parquet")
    start, sep, end = stem.partition("-")
    if not sep or not start.isdigit() or not end.isdigit():
        return None
    return Segment(int(start), int(end), path)


class SegmentStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def folder(self, kind: str) -> Path:
        path = self.directory / kind
        path.mkdir(parents=True, exist_ok=True)
        return path

    def all_segments(self, kind: str) -> list[Segment]:
        found = (_parse(path) for path in self.folder(kind).glob("*.parquet"))
        return sorted(segment for segment in found if segment is not None)

    def live(self, kind: str) -> list[Segment]:
        """Non-overlapping segments, preferring the widest where a compaction left its inputs behind."""
        chosen: list[Segment] = []
        covered_until = -1
        for segment in sorted(self.all_segments(kind), key=lambda s: (s.start_ms, -s.end_ms)):
            if segment.start_ms >= covered_until:
                chosen.append(segment)
                covered_until = segment.end_ms
        return chosen

    def cursor(self, kind: str) -> int | None:
        live = self.live(kind)
        return live[-1].end_ms if live else None

    def path_for(self, kind: str, start_ms: int, end_ms: int) -> Path:
        return self.folder(kind) / f"{start_ms}-{end_ms}.parquet"

    @staticmethod
    def publish(temporary: Path, final: Path) -> None:
        os.replace(temporary, final)

    def remove_covered(self, kind: str, *, grace_seconds: float = REMOVAL_GRACE_SECONDS) -> None:
        """Delete segments a compacted one covers, once it has been live long enough that no report
        that listed the old files can still be reading them."""
        live = self.live(kind)
        now = time.time()
        for segment in self.all_segments(kind):
            if segment in live:
                continue
            cover = next(
                (s for s in live if s.start_ms <= segment.start_ms and segment.end_ms <= s.end_ms), None
            )
            if cover is not None and now - cover.path.stat().st_mtime >= grace_seconds:
                segment.path.unlink(missing_ok=True)

    def remove_unfinished(self, kind: str) -> None:
        """Delete what a writer killed mid-window left (its CSV staging file, its Parquet file not yet
        renamed): call it holding the writer lock, when no other writer can be writing them."""
        folder = self.folder(kind)
        for leftover in [*folder.glob("*.csv"), *folder.glob("*.parquet.tmp")]:
            leftover.unlink(missing_ok=True)

    @contextmanager
    def writer_lock(self) -> Iterator[bool]:
        """True when this process may write (one writer per directory, across processes)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / ".writer.lock").open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
