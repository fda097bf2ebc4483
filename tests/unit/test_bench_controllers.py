"""`kubewire bench controllers` at a small size: the store, the controllers and the timings work."""

from __future__ import annotations

from kubewire.bench.controllers import run_bench


def test_bench_controllers_small() -> None:
    res = run_bench([30], pods=10, flips=2, log=lambda m: None)
    rows = {r["controllers"]: r for r in res["rows"]}
    assert len(rows) == 2
    for r in rows.values():
        assert r["services"] == 30 and r["pods"] == 10 and r["slices"] == 30  # one slice per Service
        assert r["readiness_to_slice_ms"]["p50"] > 0 and r["passes"] == 2  # one pass writes, one finds nothing
