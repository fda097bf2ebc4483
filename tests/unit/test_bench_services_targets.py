"""`kubewire bench services` holds its rows against the issue's targets (pure: no cluster)."""

from __future__ import annotations

from dataclasses import fields

from kubewire.bench.services import Row, targets


def row(services: int, **values: float) -> Row:
    base = {f.name: 0.0 for f in fields(Row) if f.name not in ("services", "nat_rules")}
    base.update(values)
    return Row(services=services, nat_rules=0, **base)


def test_targets_are_judged_on_the_rows_measured() -> None:
    rows = [row(1, overhead_connect_p50_us=2.0, render_partial_s=0.0, restore_partial_s=0.011),
            row(10000, render_full_s=1.2, restore_full_s=5.2, render_partial_s=0.03, restore_partial_s=0.125)]
    assert targets(rows) == [
        {"target": "ClusterIP overhead over direct, p50 at 1 Service", "limit": "20 µs", "measured": "2 µs", "met": True},
        {"target": "full sync of 10k Services", "limit": "2 s", "measured": "6.40 s", "met": False},
        {"target": "partial sync, one endpoint, 1 Services", "limit": "100 ms", "measured": "11 ms", "met": True},
        {"target": "partial sync, one endpoint, 10000 Services", "limit": "100 ms", "measured": "155 ms", "met": False},
    ]
    assert targets([row(1000, render_partial_s=0.004, restore_partial_s=0.033)]) == [
        {"target": "partial sync, one endpoint, 1000 Services", "limit": "100 ms", "measured": "37 ms", "met": True}]
