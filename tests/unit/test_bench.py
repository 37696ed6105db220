"""scripts/bench's pure parts: frames, ratios and summaries, the table, /proc parsers.
No root, no kernel, no timing."""

import json

import pytest

import bench
from lab import ETH_P_ARP, ETH_P_LAB


def win(workload, config, pps, seconds=2.0, cpu=None, **extra):
    rec = {"workload": workload, "config": config, "pps": pps, "seconds": seconds,
           "tracer_cpu_s": cpu, "rx": int(pps * seconds), "sent": int(pps * seconds * 1.5)}
    rec.update(extra)
    return rec


def block(workload, config, **extra):
    rec = {"workload": workload, "config": config, "ready_s": 1.0, "vmhwm_kb": 1024,
           "map_bytes": 4096, "events_lost": 0, "events_rate_limited": 0}
    rec.update(extra)
    return rec


# ---- frames ------------------------------------------------------------------

def test_unicast_frame_goes_from_host1_to_host2():
    f = bench.workload_frames("unicast", "02:b7:00:00:00:01", "10.77.0.1", "02:b7:00:00:00:02", 100)
    assert f.distinct == 1
    assert f.template[:6] == bytes.fromhex("02b700000002")
    assert f.template[6:12] == bytes.fromhex("02b700000001")
    assert int.from_bytes(f.template[12:14], "big") == ETH_P_LAB
    assert len(f.template) == 60
    assert f.frame(7) == f.template


def test_broadcast_frames_differ_only_in_arp_padding():
    f = bench.workload_frames("broadcast", "02:b7:00:00:00:01", "10.77.0.1", "02:b7:00:00:00:02", 3)
    frames = [f.frame(i) for i in range(4)]
    assert frames[0][:6] == b"\xff" * 6
    assert int.from_bytes(frames[0][12:14], "big") == ETH_P_ARP
    assert len({fr for fr in frames}) == 3                # distinct=3: frame 3 == frame 0
    assert frames[3] == frames[0]
    for fr in frames:
        assert len(fr) == 60
        assert fr[:bench.ARP_PAD_OFFSET] == frames[0][:bench.ARP_PAD_OFFSET]   # ARP itself unchanged
    # the ARP target is nobody's: .200 in host 1's /24
    assert frames[0][38:42] == bytes([10, 77, 0, 200])


def test_unknown_workload():
    with pytest.raises(ValueError):
        bench.workload_frames("multicast", "02:00:00:00:00:01", "10.0.0.1", "02:00:00:00:00:02", 1)


def test_frame_counter_wraps_within_u32():
    f = bench.Frames(b"\x00" * 10 + b"\xff\xff\xff\xff" + b"\x00" * 46, offset=10, distinct=5)
    assert f.frame(0)[10:14] == b"\xff\xff\xff\xff"
    assert f.frame(1)[10:14] == b"\x00\x00\x00\x00"


# ---- ratios and summaries -------------------------------------------------------

def test_mean_cv_ratio():
    assert bench.mean([]) is None
    assert bench.mean([1, None, 3]) == 2
    assert bench.cv_pct([5]) is None
    assert bench.cv_pct([10, 10]) == 0
    assert bench.cv_pct([9, 11]) == pytest.approx(10.0)
    assert bench.ratio(90, 100) == pytest.approx(0.9)
    assert bench.ratio(None, 100) is None
    assert bench.ratio(90, 0) is None
    assert bench.ratio(90, None) is None


def test_summarize_uses_untraced_windows_of_the_same_workload():
    windows = [
        win("unicast", None, 1000), win("unicast", None, 1200),
        win("unicast", "drops", 880, cpu=0.1), win("unicast", "floor:drops", 1078, cpu=0.0,
                                                   floor_hits=3000, sent=1500),
        win("broadcast", None, 500), win("broadcast", "drops", 250, cpu=0.2),
    ]
    blocks = [block("unicast", "drops", events_lost=2, events_rate_limited=5, vmhwm_kb=2048),
              block("unicast", "drops", events_lost=1, events_rate_limited=0, vmhwm_kb=4096),
              block("unicast", "floor:drops", map_bytes=100, ready_s=0.5),
              block("broadcast", "drops")]
    res = {(r["view"], r["workload"]): r
           for r in bench.summarize(windows, blocks, ["drops"], ["unicast", "broadcast"])}
    uni = res[("drops", "unicast")]
    assert uni["untraced_pps"] == 1100
    assert uni["traced_pps"] == 880
    assert uni["ratio"] == pytest.approx(0.8)
    assert uni["floor_ratio"] == pytest.approx(0.98)
    assert uni["cpu_pct"] == pytest.approx(5.0)        # 0.1 s of CPU in a 2 s window
    assert uni["floor_cpu_pct"] == 0
    assert uni["events_lost"] == 3 and uni["events_rate_limited"] == 5
    assert uni["rss_kb"] == 4096                       # the peak over blocks
    assert uni["map_bytes"] == 4096 and uni["floor_map_bytes"] == 100
    assert uni["floor_ready_s"] == 0.5
    assert uni["hooks_per_pkt"] == pytest.approx(2.0)  # floor hits per frame sent
    assert uni["untraced_windows"] == 2 and uni["windows"] == 1
    bc = res[("drops", "broadcast")]
    assert bc["untraced_pps"] == 500 and bc["ratio"] == pytest.approx(0.5)
    assert bc["floor_ratio"] is None and bc["untraced_cv_pct"] is None


def test_summarize_unknown_events_when_a_block_has_no_summary():
    blocks = [block("unicast", "loops"), block("unicast", "loops", events_lost=None, error="boom")]
    (r,) = bench.summarize([win("unicast", None, 10)], blocks, ["loops"], ["unicast"])
    assert r["events_lost"] is None
    assert r["traced_pps"] is None and r["ratio"] is None
    assert r["errors"] == ["boom"]


def test_summarize_bpf_stats():
    windows = [win("unicast", None, 100),
               win("unicast", "drops", 100, seconds=2.0, bpf_ns=200_000_000, bpf_runs=1_000_000, rx=500_000)]
    (r,) = bench.summarize(windows, [], ["drops"], ["unicast"])
    assert r["bpf_ns_per_run"] == 200
    assert r["bpf_runs_per_pkt"] == 2
    assert r["bpf_cpu_pct"] == pytest.approx(10.0)


# ---- the table ---------------------------------------------------------------------

def test_table_aligns_and_shows_missing_as_dash():
    windows = [win("unicast", None, 512_000), win("unicast", None, 500_000),
               win("unicast", "drops", 480_000, cpu=0.02)]
    results = bench.summarize(windows, [block("unicast", "drops", map_bytes=4 * 1024 * 1024)],
                              ["drops", "loops"], ["unicast"])
    lines = bench.render_table(results)
    assert len(lines) == 4                      # header, rule, two rows
    assert len({len(lines[0]), len(lines[1])}) == 1
    header = lines[0].split()
    assert header[:2] == ["view", "workload"]
    drops = lines[2].split()
    assert drops[:2] == ["drops", "unicast"]
    assert "506" in drops                       # untraced kpps, mean of 512 and 500
    assert "480" in drops and "0.949" in drops  # traced kpps and ratio
    assert "4096" in drops                      # maps KiB
    loops = lines[3].split()
    assert loops[:2] == ["loops", "unicast"] and loops.count("-") >= 5
    # every row's right edge lines up with the header's
    assert lines[2].rstrip().endswith(drops[-1]) and len(lines[2]) <= len(lines[1])


def test_table_with_bpf_columns():
    (r,) = bench.summarize([], [], ["drops"], ["unicast"])
    assert "bpf ns/run" in bench.render_table([r], bpf_stats=True)[0]
    assert "bpf ns/run" not in bench.render_table([r])[0]


# ---- parsers -------------------------------------------------------------------------

STAT = ("4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 2000 0 0 0 "
        "150 25 0 0 20 0 4 0 1000 200000000 5000 18446744073709551615")


def test_parse_stat():
    assert bench.parse_stat_cpu_ticks(STAT) == 175
    assert not bench.parse_stat_is_kthread(STAT)
    kthread = STAT.replace(" 4194560 ", " %d " % 0x00208040)
    assert bench.parse_stat_is_kthread(kthread)


def test_parse_vmhwm():
    assert bench.parse_vmhwm_kb("Name:\tx\nVmPeak:\t  9 kB\nVmHWM:\t  174552 kB\n") == 174552
    assert bench.parse_vmhwm_kb("Name:\tx\n") is None


def test_parse_fdinfo_map():
    info = bench.parse_fdinfo("pos:\t0\nflags:\t02000002\nmap_type:\t5\nmemlock:\t1835904\nmap_id:\t1382\n")
    assert info["map_id"] == "1382" and info["memlock"] == "1835904"


def test_other_cpu_counts_only_processes_seen_twice():
    assert bench.other_cpu_seconds({1: 100, 2: 50}, {1: 100 + bench.CLK_TCK, 3: 10_000}) == 1.0
    assert bench.other_cpu_seconds({1: 100}, {1: 90}) == 0


def test_foreign_tracing_progs():
    progs = [{"id": 1, "type": "raw_tracepoint", "name": "ours"},
             {"id": 2, "type": "raw_tracepoint", "name": "theirs"},
             {"id": 3, "type": "cgroup_skb", "name": "systemd"}]
    assert bench.foreign_tracing_progs(progs, {1}) == ["theirs"]
    assert bench.foreign_tracing_progs(None, {1}) is None


def test_sender_output():
    assert bench.parse_sender_output(b"1560064 3\n") == (1560064, 3)
    assert bench.parse_sender_output(b"") == (None, None)


def test_last_summary_and_tracepoints():
    out = "\n".join([
        json.dumps({"kind": "drop", "count": 1}),
        "not json",
        json.dumps({"kind": "summary", "stats": {"events_lost": 1},
                    "probes": {"drops": "raw_tracepoint:kfree_skb",
                               "forward": "raw_tracepoint:netif_receive_skb+net_dev_queue",
                               "neigh": None}}),
    ])
    summary = bench.last_summary(out)
    assert summary["stats"]["events_lost"] == 1
    assert bench.summary_tracepoints(summary) == ("kfree_skb", "netif_receive_skb", "net_dev_queue")
    assert bench.summary_tracepoints({"probes": {"forward": "kprobe:br_forward"}}) is None
    # tcx port programs are a hook of their own; a reconstructed hook attaches nothing
    tcx = {"probes": {"drops": "raw_tracepoint:kfree_skb", "ports": "tcx:ingress+egress",
                      "forward": "reconstructed:ports+kfree_skb", "fdb": "raw_tracepoint:br_fdb_update"}}
    assert bench.summary_tracepoints(tcx) == ("kfree_skb", "tcx", "br_fdb_update")
    assert bench.summary_tracepoints(None) is None
    assert bench.last_summary("") is None


def test_floor_counts_each_tracepoint_in_its_own_slot():
    assert bench.floor_cflags(["kfree_skb", "net_dev_queue"]) == ["-DFLOOR_TRACEPOINTS=2", "-DFLOOR_TCX=0"]
    src = bench.FLOOR_SRC.read_text()
    assert "BPF_PERCPU_ARRAY(hits, u64, FLOOR_SLOTS > 0 ? FLOOR_SLOTS : 1);" in src
    assert "#define FLOOR_SLOTS (FLOOR_TRACEPOINTS + 2 * FLOOR_TCX)" in src
    # program floor_tp<i> counts in slot i (attached to the i-th tracepoint by name)
    assert "int floor_tp##i(struct bpf_raw_tracepoint_args *ctx)" in src and "count(i);" in src
    assert "FLOOR_TP(%d)" % (bench.floor.FLOOR_MAX_TRACEPOINTS - 1) in src
    with pytest.raises(ValueError):
        bench.floor_cflags(["kfree_skb); evil("])
    with pytest.raises(ValueError):
        bench.floor_cflags(["tp%d" % i for i in range(bench.floor.FLOOR_MAX_TRACEPOINTS + 1)])


def test_floor_with_tcx_counts_ingress_and_egress_after_the_tracepoints():
    assert bench.floor_cflags(["kfree_skb"], tcx=True) == ["-DFLOOR_TRACEPOINTS=1", "-DFLOOR_TCX=1"]
    src = bench.FLOOR_SRC.read_text()
    assert "int floor_ingress(struct __sk_buff *skb)" in src and "count(FLOOR_TRACEPOINTS);" in src
    assert "int floor_egress(struct __sk_buff *skb)" in src and "count(FLOOR_TRACEPOINTS + 1);" in src
    assert "return -1;" in src          # TCX_NEXT: never changes the frame's fate
    assert src.index("#if FLOOR_TCX") < src.index("int floor_ingress")   # only built with tcx


def test_default_floor_follows_the_port_hooks():
    tps = ("kfree_skb", "br_fdb_update", "netif_receive_skb", "net_dev_queue", "neigh_update_done")
    assert bench.with_port_hooks(tps, "tcx") == ("kfree_skb", "br_fdb_update", "neigh_update_done", "tcx")
    assert bench.with_port_hooks(tps, "raw_tracepoint") == tps
    assert bench.with_port_hooks(("kfree_skb",), "tcx") == ("kfree_skb",)


def test_cpu_sweep_rows_and_rendering():
    windows = [
        {"config": None, "pps": 400e3, "seconds": 3.0, "tracer_cpu_s": None},
        {"config": "loops", "pps": 350e3, "seconds": 3.0, "tracer_cpu_s": 0.03},
        {"config": "sweep:loops", "rate": 1000, "pps": 1e3, "seconds": 3.0, "tracer_cpu_s": 0.03},
        {"config": "sweep:loops", "rate": 0, "pps": 350e3, "seconds": 3.0, "tracer_cpu_s": 0.06},
        {"config": "sweep:loops", "rate": 100000, "pps": 100e3, "seconds": 3.0, "tracer_cpu_s": 0.03},
    ]
    rows = bench.sweep_rows(windows)
    assert [(r["rate"], r["cpu_pct"]) for r in rows] == [(1000, 1.0), (0, 2.0), (100000, 1.0)]
    (line,) = bench.render_sweep(rows)
    assert line == "cpu sweep loops: 1 kpps 1.0%, 100 kpps 1.0%, 350 kpps 2.0% (spread 1.0 points)"
    # a repeated rate keeps its run order (start-up, then steady state); the workload is named
    steady = [{"config": "sweep:watch", "workload": "broadcast", "rate": 0, "pps": p, "seconds": 3.0,
               "tracer_cpu_s": c} for p, c in ((500e3, 0.3), (510e3, 0.03), (505e3, 0.03))]
    (line,) = bench.render_sweep(bench.sweep_rows(steady))
    assert line == ("cpu sweep watch (broadcast): 500 kpps 10.0%, 510 kpps 1.0%, 505 kpps 1.0% "
                    "(spread 9.0 points)")


def test_rates_argument():
    assert bench.parse_args(["--rates", "1000,0"]).rates == [1000, 0]
    assert bench.parse_args([]).rates == []
    for bad in ("fast", "-5", ""):
        with pytest.raises(SystemExit):
            bench.parse_args(["--rates", bad])


def test_paced_sender_arguments():
    s = bench.Senders.__new__(bench.Senders)
    s.binary = "/x/brtb-sender"
    frames = bench.Frames(b"\x00" * 60)
    assert s.argv(None, "eth0", frames, 10, 1.0, rate=500)[-1] == "500"
    assert s.argv(None, "eth0", frames, 10, 1.0)[-1] == "1"      # DISTINCT, no rate
    assert "rate > 0" in bench.SENDER_C.read_text() and "nanosleep" in bench.SENDER_C.read_text()


def test_tcx_spec():
    assert bench.parse_tcx_spec("/run/netns/brtb-br:2,5,7") == ("/run/netns/brtb-br", [2, 5, 7])
    assert bench.parse_tcx_spec(None) is None


def test_views_are_data():
    assert set(bench.VIEWS) >= {"drops", "loops", "top", "export"}
    assert "netif_receive_skb" in bench.VIEWS["loops"].floor_tracepoints
    assert "netif_receive_skb" not in bench.VIEWS["drops"].floor_tracepoints


def test_args():
    args = bench.parse_args([])
    assert args.window == 3 and args.rounds == 2
    assert args.views == ["drops", "loops"] and args.workloads == ["unicast", "broadcast"]
    args = bench.parse_args(["--views", "loops,drops,loops", "--workloads", "broadcast"])
    assert args.views == ["loops", "drops"] and args.workloads == ["broadcast"]
    for bad in (["--views", "nope"], ["--workloads", ""], ["--window", "0"], ["--rounds", "0"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_sender_c_source_is_bounded():
    # both bounds are in the loop condition/body of the compiled sender
    c, py = bench.SENDER_C.read_text(), bench.SENDER_PY.read_text()
    assert "sent < count" in c and "now() >= end" in c
    assert "sent < count" in py and "time.monotonic() >= end" in py


def test_ratio_uses_the_untraced_windows_next_to_each_traced_one():
    seq = [(None, 1000), ("drops", 900), (None, 800), ("floor:drops", 790), (None, 2000)]
    windows = [dict(win("unicast", cfg, pps), seq=i, round=0) for i, (cfg, pps) in enumerate(seq)]
    windows.append(dict(win("broadcast", None, 5), seq=9, round=0))
    (r,) = bench.summarize(windows, [], ["drops"], ["unicast"])
    assert r["untraced_pps"] == 900                 # (1000 + 800) / 2, not the 2000 later on
    assert r["ratio"] == pytest.approx(1.0)
    assert r["floor_ratio"] == pytest.approx(790 / 1400)
    assert r["untraced_windows"] == 2
    assert r["untraced_cv_pct"] is not None          # spread over all untraced windows


def test_busy_windows_are_counted():
    seq = [(None, {}), ("drops", {"foreign_progs": ["kfree_skb"]}), (None, {"other_cpu_pct": 80.0}),
           ("floor:drops", {}), (None, {"other_cpu_pct": 3.0, "foreign_progs": []})]
    windows = [dict(win("unicast", cfg, 100), seq=i, round=0, **extra) for i, (cfg, extra) in enumerate(seq)]
    (r,) = bench.summarize(windows, [], ["drops"], ["unicast"])
    assert (r["busy_windows"], r["involved_windows"]) == (2, 5)
    assert "2/5" in bench.render_table([r])[2].split()


def test_bpf_objects_from_fdinfo():
    prog = "prog_type:\t17\nmemlock:\t4096\nprog_id:\t7\nrun_time_ns:\t1071\nrun_cnt:\t3\n"
    link = "link_type:\traw_tracepoint\nlink_id:\t1\nprog_id:\t7\ntp_name:\tkfree_skb\n"
    mp = "map_type:\t6\nmemlock:\t360\nmap_id:\t5\n"
    objs = bench.bpf_objects_from_fdinfo([prog, link, mp, mp, "pos:\t0\nflags:\t02\n"])
    assert objs["progs"] == [{"id": 7, "run_time_ns": 1071, "run_cnt": 3}]   # the link does not reset it
    assert objs["maps"] == [{"id": 5, "type": 6, "memlock": 360}]


def test_parse_metrics_sums_label_sets():
    text = "\n".join([
        "# HELP brtrace_events_lost_total Sampled records the ring buffer had no room for.",
        "# TYPE brtrace_events_lost_total counter",
        'brtrace_events_lost_total{bridge="br-int"} 3.0',
        'brtrace_events_lost_total{bridge="br-ext"} 4.0',
        'brtrace_events_rate_limited_total{bridge="br-int"} 12.0',
        "garbage line",
    ])
    m = bench.parse_metrics(text)
    assert m["brtrace_events_lost_total"] == 7
    assert m["brtrace_events_rate_limited_total"] == 12


def test_metrics_view_gets_a_port_placeholder():
    spec = bench.VIEWS["export"]
    assert spec.metrics and not spec.json
    assert any("{port}" in a for a in spec.extra_args)
    assert all("127.0.0.1" in a for a in spec.extra_args if "{port}" in a)   # loopback only


@pytest.mark.parametrize("cpus,senders,pin,expected", [
    ({0, 1}, 1, True, {1}),            # the default on 2 CPUs: one sender, one CPU for the tracer
    ({0, 1, 2, 3}, 2, True, {2, 3}),
    ({0, 1}, 2, True, None),           # no CPU left: the tracer is not pinned
    ({0, 1}, 1, False, None),
])
def test_tracer_runs_on_the_cpus_the_pinned_senders_leave(monkeypatch, cpus, senders, pin, expected):
    monkeypatch.setattr(bench.run.os, "sched_getaffinity", lambda pid: cpus)
    b = bench.Bench.__new__(bench.Bench)
    b.args = type("Args", (), {"pin": pin, "senders": senders})()
    assert b.tracer_cpus() == expected


def test_ratio_standard_error_comes_from_each_window_against_its_own_neighbours():
    # round 0: 900 between 1000 and 1000 -> 0.90; round 1: 450 between 500 and 500 -> 0.90:
    # the baseline halved, the per-window ratios agree, so the error is 0 although pps moved.
    seq = [(0, None, 1000), (0, "drops", 900), (0, None, 1000),
           (1, None, 500), (1, "drops", 450), (1, None, 500)]
    windows = [dict(win("unicast", cfg, pps), seq=i, round=r) for i, (r, cfg, pps) in enumerate(seq)]
    traced = [w for w in windows if w["config"] == "drops"]
    assert bench.ratio_se(windows, traced) == pytest.approx(0.0)
    # 0.8 and 1.0: sd 0.1414, over sqrt(2) -> 0.1
    windows[4]["pps"] = 400
    windows[1]["pps"] = 1000
    assert bench.ratio_se(windows, traced) == pytest.approx(0.1, rel=1e-6)
    assert bench.ratio_se(windows, traced[:1]) is None
    r = bench.summarize(windows, [], ["drops"], ["unicast"])[0]
    assert r["ratio_se"] == pytest.approx(0.1, rel=1e-6) and r["floor_ratio_se"] is None
