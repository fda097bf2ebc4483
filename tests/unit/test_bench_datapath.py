"""The pure parts of `kubewire bench datapath`: percentiles, /proc/stat, the endpoint change, targets,
the table and the plot."""

from __future__ import annotations

import copy

from kubewire.bench.datapath import (
    TABLE_COLUMNS,
    busy_ticks,
    changed_slice,
    delta_pct,
    evaluate_targets,
    pct,
    per_10k,
    plot,
    stamp,
    summary,
    table_rows,
)
from kubewire.bench.services import filler


def test_pct_and_summary():
    xs = [float(x) for x in range(1, 101)]
    assert pct(xs, 50) == 51.0 and pct(xs, 99) == 100.0 and pct([], 50) == 0.0
    assert summary([3.0, 1.0, 2.0]) == {"p50": 2.0, "p90": 3.0, "p99": 3.0, "n": 3}


def test_busy_ticks_counts_user_nice_system_irq_softirq():
    stat = "cpu  100 2 30 9999 50 4 5 7 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\n"
    assert busy_ticks(stat) == 100 + 2 + 30 + 4 + 5  # not idle, iowait or steal
    assert per_10k(1.5, 5000) == 3.0 and per_10k(1.0, 0) is None


def test_changed_slice_is_a_new_object_with_a_new_resource_version():
    _, slices = filler(2)
    stamp(slices, "slice")
    before = copy.deepcopy(slices)
    new = changed_slice(slices)
    assert slices == before  # the agents keep references: the old object must not change
    assert new["metadata"]["name"] == slices[0]["metadata"]["name"]
    assert new["metadata"]["resourceVersion"] != slices[0]["metadata"]["resourceVersion"]
    assert new["endpoints"][0]["addresses"] == ["172.31.255.254"]
    assert new["endpoints"][1:] == slices[0]["endpoints"][1:]
    probe = {"metadata": {"name": "p", "namespace": "zzzz", "resourceVersion": "7"},
             "endpoints": [{"addresses": ["10.244.1.2"], "conditions": {"ready": True}}]}
    added = changed_slice([probe])  # no synthetic slice: a not-ready endpoint is added to the probe's
    assert len(added["endpoints"]) == 2 and added["endpoints"][1]["conditions"]["ready"] is False
    assert added["metadata"]["resourceVersion"] != "7"


def row(variant, n, vip50, direct50, full=0.5, one=0.01, ref50=None):
    s = lambda p: {"p50": p, "p90": p + 10, "p99": p + 50, "n": 100}  # noqa: E731
    return {"variant": variant, "services": n, "status": "ok", "reason": "", "full_sync_s": full,
            "one_endpoint_sync_s": one, "restart_sync_s": 1.25, "vip": {"connect": s(vip50), "first_byte": s(vip50 + 100)},
            "direct": {"connect": s(direct50), "first_byte": s(direct50 + 100)},
            "overhead_connect_p50_us": vip50 - direct50,
            "reference": {"vip": {"connect": s(ref50 or vip50)}, "direct": {"connect": s(direct50)}},
            "vs_reference_pct": delta_pct(vip50, ref50 or vip50),
            "cpu_per_10k": {"vip": {"machine_busy_s": 4.0, "client_s": 1.5, "server_s": 2.0},
                            "direct": {"machine_busy_s": 3.9, "client_s": None, "server_s": 2.0}}}


def test_targets_met_and_not_met():
    rows = [row("ebpf", 1, 50, 48, ref50=49), row("ebpf", 10000, 54, 40, one=0.004, ref50=50),
            row("ebpf", 30000, 45, 44, ref50=48),
            row("nftables", 1, 50, 49), row("nftables", 10000, 70, 69, full=3.0, one=0.2, ref50=60),
            {"variant": "nftables", "services": 30000, "status": "skipped", "reason": "cap"}]
    got = {t["target"]: (t["status"], t["value"]) for t in evaluate_targets(rows)}
    flat = next(v for k, v in got.items() if k.startswith("ebpf: ClusterIP connect p50 flat"))
    assert flat == ("met", "1: +2%, 10000: +8%, 30000: -6%")  # each count against a node with 1 Service, in turns
    assert delta_pct(70, 60) == 16.7 and delta_pct(1, 0) == 0.0
    assert next(v for k, v in got.items() if k.startswith("nftables: ClusterIP connect p50 flat"))[0] == "not met"
    assert got["ebpf: ClusterIP over direct pod IP ≤ 10 µs p50 (every count)"][0] == "not met"  # +14 at 10k
    assert got["nftables: full sync of 10k Services ≤ 1 s"] == ("not met", "3.000 s (a restarted agent over the live table: 1.250 s)")
    assert got["nftables-flat: full sync of 10k Services ≤ 1 s"][0] == "not measured"
    assert got["ebpf: one-endpoint change ≤ 50 ms (every count)"][0] == "met"
    assert got["nftables: one-endpoint change ≤ 50 ms (every count)"][0] == "not met"


def test_table_rows_and_plot(tmp_path):
    rows = [row("iptables", 5000, 140, 139), {"variant": "nftables", "services": 30000, "status": "skipped",
                                                "reason": "above cap"}]
    cells = table_rows(rows)
    assert all(len(c) == len(TABLE_COLUMNS) for c in cells)
    assert cells[0][5] == "140/150/190" and cells[0][6] == "140 (+0%)" and cells[0][8] == "+1" and cells[0][-1] == "49"
    assert cells[0][3] == "1.250" and cells[0][11] == "3.90/—/2.00"
    assert cells[1][2] == "skipped: above cap" and cells[1][-1] == "274"
    out = tmp_path / "p.png"
    plot({"variants": ["iptables", "nftables"], "rows": rows, "machine": {"date": "d"}, "samples": 100}, str(out))
    assert out.read_bytes()[:4] == b"\x89PNG"
