"""Segmentation time of two checkouts, measured in pairs at the same moment.

On a shared virtual machine sequential runs differ by a third, more than most speed
changes. Here both checkouts segment the same bench pages at once, each process pinned
to its own core, then again with the cores swapped; each line is one pair, so a slow
spell slows both sides of it alike. Linux only (core pinning); needs two cores.

    python bench/compare_segment.py OLD_CHECKOUT [NEW_CHECKOUT] [--pages 16] [--pairs 2]

NEW_CHECKOUT defaults to this one; a checkout is a folder holding ``pipeline/`` and
``configs/`` (``git worktree add /tmp/old HEAD~1`` makes one).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from bench_pages import _sample_pages  # noqa: E402

# Runs in each checkout: best of three passes over the pages, ms of CPU per page.
TIMER = r"""
import sys, time
from pathlib import Path
import cv2
sys.path.insert(0, sys.argv[1])
from pipeline.config import load_config
from pipeline.segment import segment_page
config = load_config(Path(sys.argv[1]) / "configs" / "default.yaml").segment
pages = [cv2.imread(p, cv2.IMREAD_GRAYSCALE) for p in sys.argv[2:]]
segment_page(pages[0], config)
best = float("inf")
for _ in range(3):
    started = time.process_time()
    for page in pages:
        segment_page(page, config)
    best = min(best, (time.process_time() - started) / len(pages) * 1000)
print(f"{best:.1f}")
"""


def _timed_pair(first: Path, second: Path, pages: list[str]) -> tuple[float, float]:
    """Segmentation ms per page of ``first`` on core 0 and ``second`` on core 1, run together."""
    runs = []
    for core, checkout in enumerate((first, second)):
        runs.append(subprocess.Popen(
            [sys.executable, "-c", TIMER, str(checkout), *pages], stdout=subprocess.PIPE, text=True,
            preexec_fn=lambda core=core: os.sched_setaffinity(0, {core}),
        ))
    return tuple(float(run.communicate()[0].strip().splitlines()[-1]) for run in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path, nargs="?", default=ROOT)
    parser.add_argument("--pages", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=2, help="pairs per core order")
    parser.add_argument("--mnist", type=Path,
                        default=Path(os.environ.get("DIGITS_MNIST", ROOT.parent / "shared/data/mnist")))
    args = parser.parse_args()
    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        print("needs Linux and two cores to pin the pair to", file=sys.stderr)
        return 1
    old, new = args.old.resolve(), args.new.resolve()
    with tempfile.TemporaryDirectory(prefix="compare_segment_") as tmp:
        pages = []
        for index, (gray, _) in enumerate(_sample_pages(args.pages, 2024, args.mnist)):
            pages.append(str(Path(tmp) / f"page_{index:04d}.png"))
            cv2.imwrite(pages[-1], gray, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        print(f"segmentation, ms of CPU per page (best of 3 passes over {len(pages)} pages)")
        print(f"old: {old}\nnew: {new}")
        for _ in range(args.pairs):
            old_ms, new_ms = _timed_pair(old, new, pages)
            print(f"old on core 0 {old_ms:6.1f} | new on core 1 {new_ms:6.1f} | new/old {new_ms / old_ms:.3f}")
            new_ms, old_ms = _timed_pair(new, old, pages)
            print(f"new on core 0 {new_ms:6.1f} | old on core 1 {old_ms:6.1f} | new/old {new_ms / old_ms:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
