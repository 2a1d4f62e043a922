#!/usr/bin/env python3
"""The tables of tests/bench/plugins.sh, drawn from its raw results (a results.jsonl of one
run, or a file it saved under tests/bench/results/). Shared-core and pinned runs get tables
of their own; a mode that was not run is left out.

usage: tests/bench/plugins_table.py RESULTS.jsonl
"""
import json
import statistics
import sys

runs, cpu, commits = {}, {}, set()
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "meta" in r:
        commits.add(r["meta"].get("commit", "?")[:7] + (" (dirty)" if r["meta"].get("dirty") else ""))
        continue
    # Failed runs and inexact runs (counted by run.sh's table) carry no figure to use.
    if r.get("error") or r["run"].get("exact") is False:
        continue
    run = r["run"]
    runs.setdefault((r["bench"], run["label"]), []).append(run["rate"])
    if run.get("broker_cpu") and run["rate"]:
        cpu.setdefault((r["bench"], run["label"]), []).append(run["broker_cpu"] / run["rate"] * 1e6)


def med(table, bench, label):
    v = table.get((bench, label))
    return statistics.median(v) if v else None


def k(x):
    return "-" if x is None else f"{x/1e6:.2f}M" if x >= 1e6 else f"{x/1e3:.1f}k"


def ratio(a, b):
    return "-" if not a or not b else f"{a/b:.2f}"


def f(x):
    return "-" if x is None else f"{x:.3f}"


if commits:
    print(f"Commit: {', '.join(sorted(commits))}.")
    print()
modes = [("", "shared cores (broker, plugin and load generator on both)"),
         ("-pinned", "pinned (broker and its plugin on core 0, load generator on core 1)")]
for suffix, mode in modes:
    if not any(b.endswith(suffix) if suffix else not b.endswith("-pinned") for b, _ in runs):
        continue
    print(f"### {mode}")
    print()
    print("| scenario | no plugin | TopicFilter, cached | ratio | TopicFilter, no cache | ratio | events, sink | ratio | events, JSON logger | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for bench, name in [("fan-in-qos0", "fan-in QoS 0, msg/s"), ("fan-in-qos1", "fan-in QoS 1, msg/s"),
                        ("pairs-qos1", "pairs QoS 1, msg/s")]:
        b = bench + suffix
        n, c, u = med(runs, b, "none"), med(runs, b, "topic-cached"), med(runs, b, "topic-uncached")
        e, lg = med(runs, b, "events"), med(runs, b, "events-logger")
        print(f"| {name} | {k(n)} | {k(c)} | {ratio(c, n)} | {k(u)} | {ratio(u, n)} | {k(e)} | {ratio(e, n)} | {k(lg)} | {ratio(lg, n)} |")
    print()
    fixed = "fan-in-qos0-fixed" + suffix
    cn, ce = med(cpu, fixed, "none"), med(cpu, fixed, "events")
    rn, re_ = med(runs, fixed, "none"), med(runs, fixed, "events")
    print("| fan-in QoS 0 at 200k msg/s offered | delivered msg/s | broker CPU per message (us) |")
    print("|---|---|---|")
    print(f"| no plugin | {k(rn)} | {f(cn)} |")
    print(f"| message_received events (sink) | {k(re_)} | {f(ce)} |")
    print(f"| broker-side throughput ratio (CPU per message, none / events) | | {ratio(cn, ce)} |")
    print()
    print("| scenario | no plugin | Authenticate plugin | ratio |")
    print("|---|---|---|---|")
    n, a = med(runs, "connect" + suffix, "none"), med(runs, "connect" + suffix, "auth")
    print(f"| connects/s (16 concurrent) | {k(n)} | {k(a)} | {ratio(a, n)} |")
    print()
print("Ratios are rate with the plugin / rate without, of medians. Each publish is one PUBLISH check")
print("and one RECEIVE check per subscriber; cached, both are per-session lookups after the first call.")
print("Broker CPU is the broker process's own (its plugin is a process of its own).")
