"""The job core: a typed job spec, planning into keys, the loop that feeds searches and records
results, progress; result stores behind one interface (a JSONL file, Redis Streams).

The CLI (`ponder eval`, `ponder submit`, `ponder jobs`), the HTTP service and a RayJob
entrypoint are thin clients of this room. It depends on the scheduler interface and the
tasks room, never on `ponder.api`.
"""
