"""What must survive a crash: one SQLite row per document, and the output folder's lock.

``OUTPUT/state.sqlite`` holds, per document (keyed by its POSIX path relative to the
input root), the content sha256, size, mtime, status, failure reason and detail, the
page results as JSON (the ``pages`` list of ``report.json``), the model's sha256, the
hash of the reading settings, and when it was read. The batch commits once per chunk,
so a run killed at any moment resumes from the last committed chunk.

``OUTPUT/.lock`` is held with ``fcntl.flock`` for the whole run; a second run on the same
folder raises ``AlreadyRunning`` at once. The kernel drops the lock when the process
dies, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from pipeline.errors import AlreadyRunning, OutputError

STATE_FILE = "state.sqlite"
LOCK_FILE = ".lock"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    path TEXT PRIMARY KEY,
    sha256 TEXT,
    size INTEGER,
    mtime_ns INTEGER,
    status TEXT NOT NULL CHECK (status IN ('ok', 'error')),
    error TEXT,
    detail TEXT,
    pages_json TEXT NOT NULL,
    model_sha256 TEXT,
    settings_sha256 TEXT,
    read_at TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class DocumentRow:
    """One document's stored outcome. ``pages`` is the report's page list (JSON-able)."""

    path: str
    sha256: str | None
    size: int | None
    mtime_ns: int | None
    status: str
    error: str | None
    detail: str | None
    pages: list
    model_sha256: str | None
    settings_sha256: str | None
    read_at: str


_COLUMNS = (
    "path", "sha256", "size", "mtime_ns", "status", "error", "detail",
    "pages_json", "model_sha256", "settings_sha256", "read_at",
)


def utc_now() -> str:
    """ISO 8601 UTC timestamp with seconds, e.g. ``2026-01-31T02:00:05+00:00``."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def _row(values: tuple) -> DocumentRow:
    data = dict(zip(_COLUMNS, values))
    data["pages"] = json.loads(data.pop("pages_json"))
    return DocumentRow(**data)


class StateStore:
    """The SQLite state of one output folder. Use as a context manager."""

    def __init__(self, output_dir: Path):
        self.path = Path(output_dir) / STATE_FILE
        try:
            self._db = sqlite3.connect(self.path, isolation_level="DEFERRED")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise OutputError(
                    f"{self.path} was written by another version (schema {version}); "
                    "use a new --output folder or delete that file"
                )
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._db.commit()
        except sqlite3.DatabaseError as exc:
            raise OutputError(f"cannot use state file {self.path}: {exc}; delete it to start over") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "StateStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def get(self, path: str) -> DocumentRow | None:
        found = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM documents WHERE path = ?", (path,)
        ).fetchone()
        return _row(found) if found else None

    def put_many(self, rows: Iterable[DocumentRow]) -> None:
        """Insert or replace ``rows`` in one transaction (one chunk: the resume point)."""
        values = [
            (r.path, r.sha256, r.size, r.mtime_ns, r.status, r.error, r.detail,
             json.dumps(r.pages, ensure_ascii=False), r.model_sha256, r.settings_sha256, r.read_at)
            for r in rows
        ]
        with self._db:
            self._db.executemany(
                f"INSERT OR REPLACE INTO documents ({', '.join(_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(_COLUMNS))})",
                values,
            )

    def paths(self) -> list[str]:
        return [p for (p,) in self._db.execute("SELECT path FROM documents ORDER BY path")]

    def remove(self, paths: Iterable[str]) -> int:
        """Forget documents no longer in the input; returns how many rows went."""
        paths = list(paths)
        with self._db:
            self._db.executemany("DELETE FROM documents WHERE path = ?", [(p,) for p in paths])
        return len(paths)

    def rows(self, paths: Iterable[str]) -> Iterator[DocumentRow]:
        """Rows for ``paths``, in the given order; a path with no row is skipped."""
        for path in paths:
            row = self.get(path)
            if row is not None:
                yield row


@contextlib.contextmanager
def output_lock(output_dir: Path) -> Iterator[Path]:
    """Hold ``OUTPUT/.lock`` exclusively for the block, or raise ``AlreadyRunning`` at once."""
    lock_path = Path(output_dir) / LOCK_FILE
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise OutputError(f"cannot create lock file {lock_path}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "another process"
            raise AlreadyRunning(
                f"another run (pid {holder}) is writing to {output_dir}; try again when it has "
                f"finished, or use another --output"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield lock_path
    finally:
        os.close(fd)  # closing the descriptor releases the flock
