"""Continuous batching for the server: KV-cache slots that requests join and leave between decode steps.

The loop is `ernie_vl.slots.ContinuousBatch`, the same one the batch engine drives (`Engine.generate`); the server
uses it as it is. What the server relies on: every row carries its own settings (`RowParams`: max_new_tokens,
sampling, seed — concurrent requests ask for different things) and a callback that receives each token as soon as it
exists and may stop the row (a stop string matched, the client went away); requests arriving *while* others generate
join between decode steps (`fits` + `admit`); the cache grows on demand up to `max_slots` and is released when the
last row leaves, so an idle replica holds no KV memory. On CUDA the decode step is replayed from a CUDA graph
(`ERNIE_VL_DECODE` chooses). For greedy settings the tokens equal `Engine.generate` on the same `Prepared` requests
(tests/test_serve_units.py pins this).
"""

from ernie_vl.slots import ContinuousBatch as SlotDecoder
from ernie_vl.slots import Row, RowParams

__all__ = ["Row", "RowParams", "SlotDecoder"]
