"""state: SQLite rows survive and round-trip; the output lock excludes a second run."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

import pytest

from pipeline.errors import AlreadyRunning, ExitCode, OutputError
from pipeline.state import LOCK_FILE, STATE_FILE, DocumentRow, StateStore, output_lock


def row(path: str, status: str = "ok", sha: str = "a" * 64, pages=None, error=None) -> DocumentRow:
    return DocumentRow(path=path, sha256=sha, size=10, mtime_ns=123, status=status, error=error,
                       detail=None if error is None else "why", pages=pages if pages is not None else [],
                       model_sha256="m" * 64, settings_sha256="s" * 64, read_at="2026-01-01T00:00:00+00:00")


def test_rows_round_trip_across_connections(tmp_path):
    pages = [{"page": 1, "width": 10, "height": 20, "fields": [{"id": 1, "text": "0451"}]}]
    with StateStore(tmp_path) as store:
        store.put_many([row("a/ñ =x.png", pages=pages), row("b.pdf", "error", error="corrupt")])
    with StateStore(tmp_path) as store:  # a new process would see the same
        got = store.get("a/ñ =x.png")
        assert got.pages == pages and got.pages[0]["fields"][0]["text"] == "0451"
        assert store.get("b.pdf").error == "corrupt"
        assert store.get("missing") is None
        assert store.paths() == ["a/ñ =x.png", "b.pdf"]


def test_put_replaces_and_remove_forgets(tmp_path):
    with StateStore(tmp_path) as store:
        store.put_many([row("x.png", sha="1" * 64)])
        store.put_many([row("x.png", sha="2" * 64), row("y.png")])
        assert store.get("x.png").sha256 == "2" * 64
        assert store.remove(["x.png"]) == 1
        assert store.paths() == ["y.png"]


def test_rows_follow_the_requested_order_and_skip_unknown(tmp_path):
    with StateStore(tmp_path) as store:
        store.put_many([row("a"), row("b"), row("c")])
        assert [r.path for r in store.rows(["c", "zz", "a"])] == ["c", "a"]


def test_damaged_state_file_is_an_output_error(tmp_path):
    (tmp_path / STATE_FILE).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(OutputError, match="delete it"):
        StateStore(tmp_path)


def test_state_from_another_schema_version_is_refused(tmp_path):
    db = sqlite3.connect(tmp_path / STATE_FILE)
    db.execute("PRAGMA user_version=99")
    db.commit()
    db.close()
    with pytest.raises(OutputError, match="schema 99"):
        StateStore(tmp_path)


def test_second_lock_in_same_process_is_refused_then_released(tmp_path):
    with output_lock(tmp_path):
        with pytest.raises(AlreadyRunning) as caught:
            with output_lock(tmp_path):
                pass
        assert caught.value.exit_code == ExitCode.already_running
        assert str(tmp_path) in str(caught.value)
    with output_lock(tmp_path):  # released: taking it again works
        pass


def test_lock_held_by_another_process_names_its_pid(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from pipeline.state import output_lock
            with output_lock({str(tmp_path)!r}):
                print("locked", flush=True)
                sys.stdin.readline()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(AlreadyRunning, match=f"pid {holder.pid}"):
            with output_lock(tmp_path):
                pass
    finally:
        holder.communicate("\n", timeout=30)
    with output_lock(tmp_path):  # the holder exited: the lock is free
        assert (tmp_path / LOCK_FILE).exists()
