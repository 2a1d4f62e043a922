#!/usr/bin/env python3
"""The tables of tests/bench/run.sh, from its raw results: run.sh calls it at the end of a
run, and it re-renders a saved file on its own, so a committed results file and the tables
drawn from it can always be checked against each other:

    tests/bench/table.py tests/bench/results/<date>-<commit>.jsonl

The scenarios and brokers come from the file's meta record unless given after the path
(as run.sh gives them: "scenario scenario ..." "broker,broker,...").
"""
import json, statistics, sys

TRANSPORTS = {"-tls": "TLS", "-ws": "WebSocket"}

def broker_table(title, lines):
    """Prints `title`, then a table of one column per broker: `lines` are (first cell, cells)."""
    print()
    print(title)
    print()
    print("| scenario | " + " | ".join(brokers) + " |")
    print("|---|" + "---|" * len(brokers))
    for first, cells in lines:
        print(f"| {first} | " + " | ".join(cells) + " |")


def split_transport(s):
    """(scenario over TCP, transport suffix or "")"""
    for suffix in TRANSPORTS:
        if s.endswith(suffix):
            return s[: -len(suffix)], suffix
    return s, ""

results = sys.argv[1]
meta = next((json.loads(l)["meta"] for l in open(results) if l.startswith('{"meta"')), {})
if len(sys.argv) > 3:
    scenarios, named = sys.argv[2].split(), sys.argv[3].split(",")
elif meta:
    scenarios, named = meta["scenarios"], meta["brokers"]
else:
    sys.exit("table.py: no meta record in the file: give the scenarios and brokers too")
if meta and len(sys.argv) <= 3:
    print(f"Raw results: {results}; commit {meta.get('commit', '?')[:12]}"
          f"{' (dirty tree)' if meta.get('dirty') else ''}, {meta.get('date', '?')},"
          f" `{meta.get('command', '?')}`; {meta.get('versions')}; {meta.get('machine')}")
    print()
# tandem-base gets columns only when it was asked for: the usual table stays as it was.
base = "tandem-base" in named
peer_names = ["mosquitto", "rumqttd"]
# The brokers with a store get columns only when asked for, beside their kin.
stored = [b for b in ["tandem-always", "tandem-periodic", "mosquitto-persistent"] if b in named]
brokers = (["tandem"] + [b for b in stored if b.startswith("tandem")]
           + (["tandem-base"] if base else []) + ["mosquitto"]
           + [b for b in stored if b.startswith("mosquitto")] + ["rumqttd"])
runs, errors, inexact, cpu = {}, {}, {}, {}
run_of_rep = {}  # (scenario, broker) -> {repetition: run}, to pair the two builds' runs
for line in open(results):
    r = json.loads(line)
    if "meta" in r:
        continue
    if r.get("error"):
        errors[(r["bench"], r["label"])] = errors.get((r["bench"], r["label"]), 0) + 1
        continue
    run = r["run"]
    key = (r["bench"], run["label"])
    runs.setdefault(key, []).append(run)
    run_of_rep.setdefault(key, {})[r["rep"]] = run
    if run.get("exact") is False:
        inexact[key] = inexact.get(key, 0) + 1
    if run.get("loadgen_cpu") is not None:
        cpu[key] = max(cpu.get(key, 0), run["loadgen_cpu"])

def median(key, field):
    # An inexact run (loss, duplicate or disorder where QoS 1/2 promises none) measured
    # something else than the others: reported, never part of a median.
    vals = [r[field] for r in runs.get(key, [])
            if r.get(field) is not None and r.get("exact") is not False]
    return statistics.median(vals) if vals else None

def fmt_rate(x):
    if x is None:
        return "-"
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.0f}"

def fmt_ms(x):
    return "-" if x is None else f"{x / 1000:.3f} ms"

# (row label, scenario, field, higher is better, format)
rows = []
names = {
    "fan-in-qos0": "fan-in QoS 0 (8 pub -> 1 sub), msg/s",
    "fan-in-qos1": "fan-in QoS 1 (8 pub -> 1 sub), msg/s",
    "fan-out-qos0": "fan-out QoS 0 (1 pub -> 8 sub), msg/s delivered",
    "fan-out-qos1": "fan-out QoS 1 (1 pub -> 8 sub), msg/s delivered",
    "pairs-qos0": "pairs QoS 0 (4 pairs), msg/s",
    "pairs-qos1": "pairs QoS 1 (4 pairs), msg/s",
    "connect": "connects/s (16 concurrent)",
    "fan-in-qos0-fixed": "fan-in QoS 0 at 200k msg/s offered, msg/s",
}
names["fan-in-qos1-persistent"] = "fan-in QoS 1, persistent subscriber (8 pub -> 1 sub), msg/s"
names["fan-out-qos1-persistent"] = (
    "fan-out QoS 1, persistent subscribers (1 pub -> 8 sub), msg/s delivered")
for k in ["fan-in-qos0", "fan-in-qos1", "fan-out-qos0", "fan-out-qos1"]:
    names[k + "-v5"] = names[k].replace(", msg/s", " MQTT 5, msg/s")
names["latency"] = "latency QoS 1 at 2k msg/s"

def label_of(s):
    if s.endswith("-pinned"):
        return label_of(s[: -len("-pinned")]) + " [pinned: broker 1 core, loadgen 1 core]"
    base, suffix = split_transport(s)
    label = names[base]
    if not suffix:
        return label
    over = " over " + TRANSPORTS[suffix]
    if base.startswith("connect"):
        return label + over + (" (full handshakes)" if suffix == "-tls" else "")
    head, sep, unit = label.rpartition(", ")
    return head + over + sep + unit if sep else label + over

for s in scenarios:
    if split_transport(s.removesuffix("-pinned"))[0] == "latency":
        rows.append((label_of(s) + ", p50", s, "p50_us", False, fmt_ms))
        rows.append((label_of(s) + ", p99", s, "p99_us", False, fmt_ms))
    else:
        rows.append((label_of(s), s, "rate", True, fmt_rate))

def ratio(t, p, higher):
    if t is None or p is None or t == 0 or p == 0:
        return None
    return t / p if higher else p / t

base_head = " tandem/tandem-base |" if base else ""
print("| scenario | " + " | ".join(brokers) + " |" + base_head + " tandem/mosquitto | tandem/best |")
print("|---|" + "---|" * (len(brokers) + base + 2))
notes = []
for label, s, field, higher, fmt in rows:
    vals = {b: median((s, b), field) for b in brokers}
    cells = []
    for b in brokers:
        cell = fmt(vals[b])
        if errors.get((s, b)):
            cell += " (err)"
        if inexact.get((s, b)) and field != "p99_us":
            cell += " (!)"
            notes.append(f"{b} {s}: {inexact[(s, b)]} run(s) not exact (lost, duplicated or out of order), left out of the median")
        cells.append(cell)
    peers = [vals[b] for b in peer_names if vals[b] is not None]
    best = (max(peers) if higher else min(peers)) if peers else None
    r_m = ratio(vals["tandem"], vals["mosquitto"], higher)
    r_b = ratio(vals["tandem"], best, higher)
    f = lambda x: "-" if x is None else f"{x:.2f}"
    r_base = f" {f(ratio(vals['tandem'], vals['tandem-base'], higher))} |" if base else ""
    print(f"| {label} | " + " | ".join(cells) + f" |{r_base} {f(r_m)} | {f(r_b)} |")

# The brokers with a store: each Tandem variant against Mosquitto with persistence, and each
# broker with a store against itself without one (what storing costs it), in the same run.
persist_table = []
if stored:
    pairs = [("tandem-always", "mosquitto-persistent"), ("tandem-periodic", "mosquitto-persistent"),
             ("tandem", "mosquitto-persistent"), ("tandem-always", "tandem"),
             ("tandem-periodic", "tandem"), ("mosquitto-persistent", "mosquitto")]
    pairs = [(a, b) for a, b in pairs if a in brokers and b in brokers]
    persist_table.append("")
    persist_table.append("With a store (each run from an empty one): ratios of medians in the same run, "
                         "a/b; above 1: a is faster.")
    persist_table.append("")
    persist_table.append("| scenario | " + " | ".join(f"{a} / {b}" for a, b in pairs) + " |")
    persist_table.append("|---|" + "---|" * len(pairs))
    for label, s, field, higher, fmt in rows:
        cells = []
        for a, b in pairs:
            r = ratio(median((s, a), field), median((s, b), field), higher)
            cells.append("-" if r is None else f"{r:.2f}")
        persist_table.append(f"| {label} | " + " | ".join(cells) + " |")
    # Storing runs at the disk's pace, and a disk shared with other work is noisy: each
    # broker's lowest and highest repetition beside the medians.
    persist_table.append("")
    persist_table.append("Lowest - highest repetition:")
    persist_table.append("")
    persist_table.append("| scenario | " + " | ".join(b for b in brokers if b != "rumqttd") + " |")
    persist_table.append("|---|" + "---|" * (len(brokers) - 1))
    for label, s, field, higher, fmt in rows:
        cells = []
        for b in brokers:
            if b == "rumqttd":
                continue
            vals = [r[field] for r in runs.get((s, b), []) if r.get(field) is not None]
            cells.append(f"{fmt(min(vals))} - {fmt(max(vals))}" if vals else "-")
        persist_table.append(f"| {label} | " + " | ".join(cells) + " |")
    persist_table.append("")
    persist_table.append("tandem-always acknowledges a QoS 1 PUBLISH once it is synced to disk; "
                         "tandem-periodic syncs every interval; mosquitto-persistent writes its whole "
                         "database only at shutdown and every autosave_interval (1800 s), never "
                         "per message.")
    persist_table.append("Only persistent sessions are stored: in the scenarios without "
                         "-persistent the store holds nothing but retained messages.")
print()
print("Ratios are Tandem's advantage: throughput tandem/peer, latency peer/tandem; above 1 is better.")
print("Bar: tandem/mosquitto >= 1 in every row and tandem/best >= 0.5.")
if base:
    print("tandem-base is another Tandem build, not a peer: it is not in tandem/best.")
if any(split_transport(s)[1] for s in scenarios) and "rumqttd" in sys.argv[3].split(","):
    notes.append("rumqttd is not run over TLS or WebSocket here: tandem/best compares with Mosquitto alone in those rows")
for (s, b), n in sorted(errors.items()):
    notes.append(f"{b} {s}: {n} run(s) failed (see loadgen.log)")
for (s, b), c in sorted(cpu.items()):
    if c > 0.9:
        notes.append(f"{b} {s}: the load generator used {c * 100:.0f}% of a core: it may be the bottleneck")
for n in dict.fromkeys(notes):
    print(f"- {n}")
for line in persist_table:
    print(line)

# Two builds: is the difference larger than the noise? The noise is each build's own spread
# over its repetitions; the ratio per repetition pairs runs that were minutes apart, so slow
# drift of the machine cancels in it.
def by_rep(key, field):
    return {k: r[field] for k, r in run_of_rep.get(key, {}).items() if r.get(field) is not None}

if base:
    print()
    print("tandem against tandem-base, repetition by repetition: spread is (max - min) / median of")
    print("a build's repetitions; the ratio per repetition is tandem's advantage in that repetition.")
    print()
    print("| scenario | tandem min - max | spread | tandem-base min - max | spread | ranges overlap "
          "| tandem/tandem-base per repetition, min / median / max |")
    print("|---|---|---|---|---|---|---|")
    too_few = False
    for label, s, field, higher, fmt in rows:
        t, b = by_rep((s, "tandem"), field), by_rep((s, "tandem-base"), field)
        if not t or not b:
            print(f"| {label} | - | - | - | - | - | - |")
            continue
        def span(v):
            lo, hi, mid = min(v.values()), max(v.values()), statistics.median(v.values())
            spread = f"{(hi - lo) / mid * 100:.1f}%" if mid else "-"
            return f"{fmt(lo)} - {fmt(hi)}", spread, lo, hi
        t_range, t_spread, t_lo, t_hi = span(t)
        b_range, b_spread, b_lo, b_hi = span(b)
        overlap = "yes" if t_lo <= b_hi and b_lo <= t_hi else "no"
        if min(len(t), len(b)) < 3:
            # One or two runs have no spread worth the name: do not call them apart.
            t_spread = b_spread = overlap = "-"
            too_few = True
        paired = [ratio(t[k], b[k], higher) for k in sorted(t.keys() & b.keys())]
        paired = [x for x in paired if x is not None]
        per_rep = (f"{min(paired):.3f} / {statistics.median(paired):.3f} / {max(paired):.3f}"
                   if paired else "-")
        print(f"| {label} | {t_range} | {t_spread} | {b_range} | {b_spread} | {overlap} | {per_rep} |")
    if too_few:
        print()
        print("- fewer than 3 repetitions of a build: too few to tell noise from a difference (use --reps 5)")

# MQTT 5 against 3.1.1, each broker against itself in the same run.
v5 = [s for s in scenarios if s.endswith("-v5") and s[:-3] in scenarios]
if v5:
    def v5_cells(s):
        rs = [ratio(median((s, b), "rate"), median((s[:-3], b), "rate"), True) for b in brokers]
        return ["-" if r is None else f"{r:.2f}" for r in rs]
    broker_table("MQTT 5 against MQTT 3.1.1 (median rate ratio, v5/3.1.1; 1.00 is no cost):",
                 [(s[:-3], v5_cells(s)) for s in v5])

# TLS and WebSocket against plain TCP, each broker against itself in the same run; and Tandem
# over TLS or WebSocket against the peer over plain TCP (what the transport costs, in the
# peer's terms).
over = [s for s in scenarios if split_transport(s)[1] and split_transport(s)[0] in scenarios
        and split_transport(s)[0] != "latency"]
if over:
    print()
    print("TLS and WebSocket against plain TCP (median rate ratio, transport/TCP; 1.00 is no cost),")
    print("and Tandem over the transport against Mosquitto over TCP:")
    print()
    print("| scenario | transport | " + " | ".join(f"{b} /tcp" for b in brokers)
          + " | tandem over it / mosquitto tcp |")
    print("|---|---|" + "---|" * (len(brokers) + 1))
    for s in over:
        b0, suffix = split_transport(s)
        cells = []
        for b in brokers:
            r = ratio(median((s, b), "rate"), median((b0, b), "rate"), True)
            cells.append("-" if r is None else f"{r:.2f}")
        r = ratio(median((s, "tandem"), "rate"), median((b0, "mosquitto"), "rate"), True)
        cells.append("-" if r is None else f"{r:.2f}")
        print(f"| {b0} | {TRANSPORTS[suffix]} | " + " | ".join(cells) + " |")

# The spread behind each median: min / median / max over the exact runs.
def spread(s, b, field, fmt):
    vals = sorted(r[field] for r in runs.get((s, b), [])
                  if r.get(field) is not None and r.get("exact") is not False)
    return ("-" if not vals else
            f"{fmt(vals[0])} / {fmt(statistics.median(vals))} / {fmt(vals[-1])} ({len(vals)})")
broker_table("Spread over repetitions (exact runs only), min / median / max:",
             [(label, [spread(s, b, field, fmt) for b in brokers])
              for label, s, field, higher, fmt in rows])

# Who was busy: if the load generator is near its share of the machine, it may be what limits.
def cores(s, b):
    lg, br = median((s, b), "loadgen_cpu"), median((s, b), "broker_cpu")
    return "-" if lg is None else f"{lg:.2f} / {br:.2f}" if br is not None else f"{lg:.2f} / ?"
broker_table("CPU cores used during the window (medians), load generator / broker:",
             [(s, [cores(s, b) for b in brokers]) for s in scenarios])
