"""Keep the garbage collector's full collections from stalling the event loop: a full collection walks every
tracked object (~0.3 M at 10,000 integrations: 250-350 ms on a busy 2-core machine, the longest stall a cycle
had), and nearly all of them are long-lived state that it never frees (the snapshot, the exposition's lines,
the loaded configs, caches: bench/cycle.py found no cyclic garbage at all in a steady cycle)."""

from __future__ import annotations

import gc

THRESHOLDS = (700, 10, 1_000)  # Python's are (700, 10, 10)


def configure() -> None:
    """Leave full collections all but to `settle`: mid-cycle, one walked the cycle's survivors so far (100-200 ms
    on a busy machine). The young generations keep Python's thresholds: larger ones made each collection of
    generation 1 a stall of its own."""
    gc.set_threshold(*THRESHOLDS)


def settle() -> None:
    """Collect all cyclic garbage among what is not frozen yet, then freeze what survived, so no full
    collection walks it again: after startup and after each cycle.

    The collection is a full one, since garbage that survived two young collections has aged into the oldest
    generation, and freezing it would keep it for good; it walks only what the last cycle left unfrozen, not
    the frozen heap. A frozen object is still freed the moment nothing refers to it (reference counting);
    only cyclic garbage among frozen objects stays, and objects are frozen only after a full collection."""
    gc.collect()
    gc.freeze()
