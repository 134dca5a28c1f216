"""Worker functions the label store race tests run in spawned processes (importable, unlike test modules)."""

from __future__ import annotations

import time
import traceback
from typing import Any


def claim_until_empty(
    url: str, schema: str | None, stream: str, worker: int, barrier: Any, queue: Any
) -> None:
    """Open the store, wait for the other worker, then claim 3 labels at a time (new run ids) until none."""
    from lifelong.stores.labels import LabelStore

    try:
        store = LabelStore(url, schema=schema)
        try:
            barrier.wait(timeout=60)
            taken: list[tuple[int, str]] = []
            for attempt in range(1000):
                run_id = f"run-{worker}-{attempt}"
                claimed = store.claim_pending(stream, run_id, limit=3)
                if not claimed:
                    break
                taken.extend((label.id, label.claimed_by) for label in claimed)
                # SQLite's busy handler backs off while the lock holder loops straight back in; a pause
                # lets the two workers interleave, so the race is exercised rather than won by one side.
                time.sleep(0.005)
        finally:
            store.close()
        queue.put(("ok", worker, taken))
    except BaseException:  # report anything to the parent, which fails the test with it
        queue.put(("error", worker, traceback.format_exc()))


def open_store(url: str, schema: str | None, worker: int, barrier: Any, queue: Any) -> None:
    """Open (and so migrate) a store at the same moment as another process."""
    from lifelong.stores.labels import LabelStore

    try:
        barrier.wait(timeout=60)
        LabelStore(url, schema=schema).close()
        queue.put(("ok", worker, []))
    except BaseException:
        queue.put(("error", worker, traceback.format_exc()))
