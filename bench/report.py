"""Write docs/benchmarks.md and its plots (docs/benchmarks/*.png) from the
figures of the last run in bench/results/*.json (bench/run.sh all).

The page has the machine and versions, one table of the targets (figure,
baseline of the same run, ratio, target, met or not), the other figures,
the plots, and the top functions of the perf profiles taken meanwhile.
A section "Notes" is kept from the page as it was, between the markers
<!-- notes --> and <!-- /notes -->, so that the reasons for a gap written
there by hand survive the next run.
"""
import json
import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from common import REPO, RESULTS  # noqa: E402

DOC = os.path.join(REPO, "docs", "benchmarks.md")
PLOTS = os.path.join(REPO, "docs", "benchmarks")


def load(name):
    path = os.path.join(RESULTS, f"{name}.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else None


def fmt(x, digits=0):
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return f"{x:,}"


def met(ok):
    return "–" if ok is None else ("met" if ok else "**gap**")


def plot_latency(ev):
    r, d = ev.get("latency_router_ms"), ev.get("latency_direct_ms")
    if not r or not d:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for values, label in ((r, "router: publish to recorded start"), (d, "direct client: send to recorded start")):
        xs = sorted(values)
        ax.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], label=label)
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of starts")
    ax.set_title(f"Start latency at {ev.get('latency_rate', 0):.0f}/s (half the direct-start ceiling)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    path = os.path.join(PLOTS, "latency.png")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_bars(name, title, ylabel, pairs):
    pairs = [(k, v) for k, v in pairs if v is not None]
    if not pairs:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.6))
    bars = ax.bar([k for k, _ in pairs], [v for _, v in pairs], color=["#4c72b0", "#dd8452", "#55a868", "#c44e52"][:len(pairs)])
    for b, (_, v) in zip(bars, pairs):
        ax.annotate(f"{v:,.0f}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    path = os.path.join(PLOTS, f"{name}.png")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_backlog(pub):
    samples = pub.get("backlog_samples")
    if not samples:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot([t for t, _ in samples], [n for _, n in samples], marker=".")
    ax.set_xlabel("seconds since the clients started")
    ax.set_ylabel("rows in ac_outbox")
    ax.set_title(f"Outbox backlog, 4 clients calling ac_publish ({pub.get('backlog_rate', 0):,.0f}/s)")
    ax.grid(True, alpha=0.3)
    path = os.path.join(PLOTS, "backlog.png")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def profile_table(rows, n=12):
    if not rows:
        return ["(perf was not available)"]
    out = ["| self % | object | function |", "|---:|---|---|"]
    for r in rows[:n]:
        out.append(f"| {r['pct']:.2f} | {r['dso']} | `{r['sym']}` |")
    return out


def old_notes():
    if not os.path.exists(DOC):
        return None
    m = re.search(r"<!-- notes -->\n(.*?)<!-- /notes -->", open(DOC).read(), re.S)
    return m.group(1) if m else None


def main():
    os.makedirs(PLOTS, exist_ok=True)
    env, pub, ev, sch, rec = load("env"), load("publish"), load("events"), load("schedules"), load("reconcile")
    scrape = load("scrape_cost")
    lines = ["# Benchmarks", "",
             "Figures of one `make bench` run (bench/run.sh all; `make bench QUICK=1` is the short form). "
             "Every target is a ratio against a baseline measured in the same run, on the same stack "
             "(the test stack: PostgreSQL with `fsync = off`, the Temporal dev server, nats-server with "
             "JetStream), so that the load of a shared machine weighs on both sides alike. "
             "Raw figures: `bench/results/*.json` (not committed); the scripts: `bench/` (bench/README.md).", ""]
    lines += ["## Machine and versions", "",
              f"- {env.get('cores')} cores ({env.get('cpu')}), {env.get('memory_gib')} GiB memory",
              f"- {env.get('postgresql')}; Temporal CLI {', '.join(env.get('temporal') or [])}; "
              f"{env.get('nats_server')}; nats.c {env.get('libnats')}",
              f"- run started {env.get('started_at')}{' (QUICK=1)' if env.get('quick') else ''}; "
              f"load average before it {' '.join(env.get('load_before') or [])}",
              "- the busiest processes on the machine as it started (other people's work included): "
              + "; ".join(f"`{p}`" for p in (env.get("busiest_before") or [])[:6]), ""]

    ins, pubs = median(pub.get("insert_tps", [])), median(pub.get("publish_tps", []))
    match = ev.get("match", [])
    match_max = max((m["match_us"] for m in match), default=None)
    match_min = min((m["match_us"] for m in match), default=None)
    rows = [
        ("1. `ac_publish` TPS / plain INSERT TPS (pgbench, 4 clients)", f"{fmt(pubs)} / {fmt(ins)}",
         pub.get("tps_ratio"), "≥ 0.6", None if pub.get("tps_ratio") is None else pub["tps_ratio"] >= 0.6),
        ("2a. outbox backlog while 4 clients publish: peak rows / rows at the end",
         f"{fmt(pub.get('backlog_peak'))} / {fmt((pub.get('backlog_samples') or [[0, None]])[-1][1])} "
         f"({fmt(pub.get('backlog_rate'))}/s for {pub.get('backlog_seconds')} s)", None, "bounded",
         None if pub.get("backlog_peak") is None else pub.get("backlog_settle_s", 99) < 10),
        (f"2b. outbox drain / nats.c async publisher (the faster of 256 and 4,000 pending: "
         f"{pub.get('async_window', 256)}), events/s",
         f"{fmt(pub.get('drain_rate'))} / {fmt(pub.get('async_rate'))}", pub.get("drain_ratio"), "≥ 0.9",
         None if pub.get("drain_ratio") is None else pub["drain_ratio"] >= 0.9),
        ("3. router intake, nothing matches / the best bare nats.c consumer (pipelined or not), events/s",
         f"{fmt(ev.get('intake_router'))} / {fmt(ev.get('intake_bare_best', ev.get('intake_bare')))}", ev.get("intake_ratio"), "≥ 0.9",
         None if ev.get("intake_ratio") is None else ev["intake_ratio"] >= 0.9),
        ("4. router CPU per started workflow, ms", fmt(ev.get("router_cpu_ms_per_start"), 3), None, "≤ 0.1",
         None if ev.get("router_cpu_ms_per_start") is None else ev["router_cpu_ms_per_start"] <= 0.1),
        ("5a. publish-to-started p50 at half the ceiling, ms", fmt(ev.get("latency_router_p50"), 1), None, "≤ 10",
         None if ev.get("latency_router_p50") is None else ev["latency_router_p50"] <= 10),
        ("5b. p99 router / direct client at the same rate, ms",
         f"{fmt(ev.get('latency_router_p99'), 1)} / {fmt(ev.get('latency_direct_p99'), 1)}",
         ev.get("latency_p99_ratio"), "≤ 1.5",
         None if ev.get("latency_p99_ratio") is None else ev["latency_p99_ratio"] <= 1.5),
        ("6a. matched throughput / direct-start ceiling, starts/s",
         f"{fmt(ev.get('router_rate'))} / {fmt(ev.get('direct_ceiling'))}", ev.get("throughput_ratio"), "≥ 0.95",
         None if ev.get("throughput_ratio") is None else ev["throughput_ratio"] >= 0.95),
        ("6b. match per event (payload to jsonb + index + `@>`), 10 to 100,000 definitions, µs",
         f"{fmt(match_min, 2)} to {fmt(match_max, 2)}", None, "≤ 5, flat",
         None if match_max is None else match_max <= 5),
    ]
    lines += ["## Targets", "", "| figure | value / baseline | ratio | target | |", "|---|---|---:|---|---|"]
    for name, value, ratio, target, ok in rows:
        lines.append(f"| {name} | {value} | {fmt(ratio, 2) if ratio is not None else ''} | {target} | {met(ok)} |")
    lines.append("")

    lines += ["## Other figures", "", "| figure | value |", "|---|---|"]
    if pub:
        lines.append(f"| `ac_publish` rounds / INSERT rounds, TPS | {', '.join(fmt(x) for x in pub.get('publish_tps', []))}"
                     f" / {', '.join(fmt(x) for x in pub.get('insert_tps', []))} |")
        if pub.get("publish_alone_tps") is not None:
            lines.append(f"| `ac_publish` alone (the dispatcher stopped, nothing published meanwhile) / plain INSERT, TPS | "
                         f"{fmt(pub['publish_alone_tps'])} / {fmt(sorted(pub['insert_tps'])[len(pub['insert_tps']) // 2])} "
                         f"({fmt(pub.get('publish_alone_ratio'), 2)}) |")
        split, per_event = pub.get("tps_cpu_split"), pub.get("tps_cpu_us_per_event")
        if split and per_event:
            lines.append(f"| CPU per published event while {pub.get('clients', 4)} clients publish (first round): "
                         + ", ".join(per_event) + " | "
                         + ", ".join(f"{v:.1f}" for v in per_event.values())
                         + f" µs; together {sum(split['publish']['cpu_s'].values()) / split['publish']['seconds']:.2f} cores |")
            lines.append(f"| machine busy during the INSERT round / the `ac_publish` round | "
                         f"{split['insert']['machine_busy'] * 100:.0f}% / {split['publish']['machine_busy'] * 100:.0f}% |")
        lines.append(f"| backlog empty after the clients stopped | {fmt(pub.get('backlog_settle_s'), 1)} s; "
                     f"{fmt(pub.get('backlog_stream_messages'))} messages reached the stream |")
        lines.append(f"| drain of {fmt(pub.get('drain_n'))}: stream gained (dispatcher / async client) | "
                     f"{fmt(pub.get('drain_stream_gained'))} / {fmt(pub.get('async_stream_gained'))}; "
                     f"1,000 rows re-sent with published Msg-Ids added {fmt(pub.get('dedup_gained'))} |")
    if ev:
        lines.append(f"| intake: bare consumer with the next fetch in flight / fetching and acking one after the other | {fmt(ev.get('intake_bare'))} / {fmt(ev.get('intake_bare_simple'))} events/s |")
        for m in match:
            lines.append(f"| parse + match with {m['definitions']:,} definitions | {m['parse_us']:.2f} + {m['match_us']:.2f} µs |")
        lines.append(f"| direct client p50 at the same rate | {fmt(ev.get('latency_direct_p50'), 1)} ms "
                     f"({fmt(ev.get('latency_direct_n'))} starts; router {fmt(ev.get('latency_router_n'))} of "
                     f"{fmt(ev.get('latency_sent'))}) |")
        if ev.get("soak_rss_kb"):
            first, last = ev["soak_rss_kb"][0], ev["soak_rss_kb"][-1]
            lines.append(f"| router RSS over {fmt(ev.get('soak_n'))} unmatched events | {first[1] / 1024:.1f} MiB after "
                         f"{fmt(first[0])}, {last[1] / 1024:.1f} MiB after {fmt(last[0])} "
                         f"({ev.get('soak_growth_pct', 0):+.1f}%) |")
            if ev.get("soak_anon_shmem_kb"):
                _, anon0, shm0 = ev["soak_anon_shmem_kb"][0]
                _, anon1, shm1 = ev["soak_anon_shmem_kb"][-1]
                lines.append(f"| its parts: the router's own memory (RssAnon) / shared memory it touched (RssShmem) | "
                             f"{anon0 / 1024:.1f} / {shm0 / 1024:.1f} MiB first, {anon1 / 1024:.1f} / {shm1 / 1024:.1f} MiB last |")
    if sch:
        lines.append(f"| commit of one INSERT of {fmt(sch.get('n'))} cron definitions / without triggers | "
                     f"{fmt(sch.get('commit_ms'), 1)} / {fmt(sch.get('commit_plain_ms'), 1)} ms ({fmt(sch.get('commit_ratio'), 2)}×) |")
        lines.append(f"| schedules applied, {sch.get('concurrency')} in flight / 1 in flight | "
                     f"{fmt(sch.get('concurrent_per_s'))}/s / {fmt(sch.get('sequential_per_s'))}/s ({fmt(sch.get('speedup'), 2)}×); "
                     f"the server's own ceiling with a direct client {fmt(sch.get('direct_speedup'), 2)}× |")
    if rec:
        for r in rec.get("in_sync", []):
            lines.append(f"| reconcile of {fmt(rec.get('n'))} in-sync definitions, {r['concurrency']} in flight | {r['seconds']:.1f} s |")
        lines.append(f"| reconcile after total loss / right after | {fmt(rec.get('recreate_s'), 1)} s / {fmt(rec.get('after_s'), 1)} s |")
    for k, v in scrape.items():
        if k != "updated_at" and isinstance(v, (int, float)):
            lines.append(f"| /metrics scrape: {k} | {fmt(v, 3) if isinstance(v, float) else fmt(v)} |")
    lines.append("")

    plots = [
        ("Latency distribution against the direct client", plot_latency(ev)),
        ("Router intake against the bare consumer", plot_bars(
            "intake", "Intake with nothing matching (events/s)", "events/s",
            [("router", ev.get("intake_router")), ("bare, pipelined", ev.get("intake_bare")),
             ("bare, one after the other", ev.get("intake_bare_simple"))])),
        ("Publish TPS against plain INSERT", plot_bars(
            "publish_tps", "Transactions per second, pgbench 4 clients", "TPS",
            [("plain INSERT", ins), ("ac_publish", pubs)])),
        ("Outbox drain against the nats.c async publisher", plot_bars(
            "drain", "Backlog drained (events/s)", "events/s",
            [("dispatcher", pub.get("drain_rate"))]
            + [(f"nats.c async, {w} pending", r) for w, r in (pub.get("async_rates") or {"256": pub.get("async_rate")}).items()])),
        ("Outbox backlog over time", plot_backlog(pub)),
    ]
    lines += ["## Plots", ""]
    for title, path in plots:
        if path:
            lines += [f"### {title}", "", f"![{title}](benchmarks/{os.path.basename(path)})", ""]

    lines += ["## Where the time goes", "",
              "Top functions by self time (`perf record -F 999`, no call graphs: the PostgreSQL build has no frame pointers).",
              "", "### `ac_publish` backends (4 pgbench clients)", ""]
    lines += profile_table(pub.get("publish_profile"))
    lines += ["", "### The router, consuming unmatched events", ""]
    lines += profile_table(ev.get("router_profile"))
    lines += ["", "## Notes", "", "<!-- notes -->",
              (old_notes() or "(reasons for the gaps, written after the run)\n").rstrip("\n"), "<!-- /notes -->", ""]
    with open(DOC, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {DOC} and {PLOTS}/*.png")


if __name__ == "__main__":
    main()
