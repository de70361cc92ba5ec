"""Draw loadtest/results/<run>.png from <run>.json (run by loadtest/run with loadtest/.venv's python).

usage: chart.py RESULTS.json OUT.png
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ORDER = ["direct", "nginx", "pingora", "llmproxy", "llmproxy-base", "litellm", "portkey"]
LABELS = {"direct": "direct", "nginx": "nginx", "pingora": "plain\nPingora", "llmproxy": "llmproxy",
          "llmproxy-base": "llmproxy\nbase", "litellm": "LiteLLM", "portkey": "Portkey"}
COLORS = {"direct": "#999999", "nginx": "#009639", "pingora": "#f6821f", "llmproxy": "#1f77b4",
          "llmproxy-base": "#aec7e8", "litellm": "#9467bd", "portkey": "#e377c2"}


def val(r, key):
    """A figure of a per-system result (the median over the rounds); 0 when absent or failed."""
    if not isinstance(r, dict) or "error" in r or "skipped" in r:
        return 0
    for k in key.split("."):
        r = r.get(k) if isinstance(r, dict) else None
    return r or 0


def main() -> None:
    data = json.load(open(sys.argv[1]))
    S = data["systems"]
    order = [s for s in ORDER if s in S and not S[s].get("error")]
    panels = []
    if any(val(S[s].get("latency"), "p50") for s in order):
        panels.append("latency")
    if any(val(S[s].get("throughput"), "rps") or val(S[s].get("large"), "rps") for s in order):
        panels.append("throughput")
    for key in ("stream1k", "stream10k"):
        if any(val(S[s].get(key), "ttft_ms.p50") for s in order):
            panels.append(key)
    if any(val(S[s].get("chunks"), "chunks_per_cpu_s") for s in order):
        panels.append("chunks")
    if (data.get("sched") or {}).get("summary"):
        panels.append("sched")
    if (data.get("cache") or {}).get("summary"):
        panels += ["cache", "cache-c1"]
    if (data.get("vkey") or {}).get("summary"):
        panels.append("vkey")
    if not panels:
        return
    ncols = 2 if len(panels) == 4 else min(3, len(panels))
    nrows = (len(panels) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.6 * ncols, 4.6 * nrows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[len(panels):]:
        ax.axis("off")
    for ax, panel in zip(flat, panels):
        if panel == "cache":
            cd = data["cache"]
            ss = cd["summary"]
            names = list(ss)
            rps = [ss[v]["rps"] or 0 for v in names]
            bars = ax.bar(range(len(names)), rps, 0.6, color=["#999999", "#1f77b4", "#2ca02c"][:len(names)])
            lab = [f"{r:,.0f}" for r in rps]
            if "cache-hit" in ss:
                h = ss["cache-hit"]
                lab[names.index("cache-hit")] += (f"\n{h.get('rps_vs_proxied') or 0:.2f}× proxied"
                                                  f"\n{h.get('rps_vs_direct') or 0:.2f}× direct")
            ax.bar_label(bars, labels=lab, fontsize=7, padding=2)
            if "proxied" in ss:
                ax.axhline((ss["proxied"]["rps"] or 0) * cd["min_vs_proxied"], color="#d62728", lw=0.8, ls="--",
                           label=f"{cd['min_vs_proxied']}× proxied")
                ax.legend(fontsize=7, loc="upper left")
            ax.set_title(f"response cache, c={data['settings']['throughput_conc']} (req/s)\n"
                         f"median of {len(cd['rounds'])} rounds; × = paired ratio")
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, fontsize=8)
            ax.margins(y=0.3)
            continue
        if panel == "cache-c1":
            cd = data["cache"]
            ss = cd["summary"]
            names = list(ss)
            pcts = [("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")]
            w = 0.8 / len(pcts)
            for i, (k, lbl) in enumerate(pcts):
                vals = [ss[v]["c1"].get(k) or 0 for v in names]
                bars = ax.bar([x + (i - 1) * w for x in range(len(names))], vals, w, label=lbl,
                              color=["#999999", "#1f77b4", "#2ca02c"][i])
                ax.bar_label(bars, fmt="%.3f", fontsize=6, rotation=90, padding=2)
            ax.axhline(cd["max_hit_p99_ms"], color="#d62728", lw=0.8, ls="--", label=f"{cd['max_hit_p99_ms']} ms")
            ax.set_title("response cache, c=1 closed loop (ms)\nmedian of the rounds")
            ax.set_ylabel("ms")
            ax.legend(fontsize=7)
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, fontsize=8)
            ax.margins(y=0.25)
            continue
        if panel == "vkey":
            vd = data["vkey"]
            ss = vd["summary"]
            names = list(ss)
            rps = [ss[v]["rps"] or 0 for v in names]
            bars = ax.bar(range(len(names)), rps, 0.6, color=["#1f77b4", "#ff7f0e", "#999999"][:len(names)])
            ax.bar_label(bars, labels=[f"{r:,.0f}" + ("" if v == "master" else
                                                     f"\n{ss[v].get('rps_vs_master') or 0:.3f}×")
                                       for v, r in zip(names, rps)], fontsize=7, padding=2)
            if "master" in ss:
                ax.axhline((ss["master"]["rps"] or 0) * vd["min_ratio"], color="#d62728", lw=0.8, ls="--",
                           label=f"{vd['min_ratio']}× master")
                ax.legend(fontsize=7, loc="lower right")
            ax.set_title(f"virtual vs master key, c={data['settings']['throughput_conc']} (req/s)\n"
                         f"median of {len(vd['rounds'])} rounds; × = paired ratio vs master")
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, fontsize=8)
            ax.margins(y=0.22)
            continue
        if panel == "sched":
            ss = data["sched"]["summary"]
            names = list(ss)
            rps = [ss[v]["rps"] or 0 for v in names]
            bars = ax.bar(range(len(names)), rps, 0.6, color=["#999999", "#1f77b4", "#d62728"][:len(names)])
            ax.bar_label(bars, labels=[f"{r:,.0f}" + ("" if v == "sched-off" else f"\n{ss[v]['rps_ratio'] or 0:.3f}×")
                                       for v, r in zip(names, rps)], fontsize=7, padding=2)
            ax.axhline((ss["sched-off"]["rps"] or 0) * data["sched"]["min_ratio"], color="#d62728", lw=0.8, ls="--",
                       label=f"{data['sched']['min_ratio']}× sched-off")
            ax.set_title(f"scheduler contention, c={data['settings']['throughput_conc']} (req/s)\n"
                         f"median of {len(data['sched']['rounds'])} rounds; × = paired ratio vs sched-off")
            ax.legend(fontsize=7, loc="lower right")
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, fontsize=8)
            ax.margins(y=0.22)
            continue
        if panel == "chunks":
            names = [s for s in order if val(S[s].get("chunks"), "chunks_per_cpu_s")]
            vals = [val(S[s]["chunks"], "chunks_per_cpu_s") for s in names]
            bars = ax.bar(range(len(names)), vals, 0.6, color=[COLORS[s] for s in names])
            ax.bar_label(bars, labels=[f"{v:,.0f}\np50 +{val(S[s]['chunks'], 'added.p50'):.2f} ms"
                                       for s, v in zip(names, vals)], fontsize=6, padding=2)
            spec = data["settings"]["chunks"]
            ax.set_title(f"chunk relay: chunks per gateway CPU-second\n{spec['streams']} streams x "
                         f"{spec['chunks']} chunks, {spec['interval_ms']} ms apart; label: added p50 latency")
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels([LABELS[s] for s in names], fontsize=8)
            ax.margins(y=0.25)
            continue
        if panel == "latency":
            pcts = ["p50", "p90", "p99"]
            w = 0.8 / len(pcts)
            for i, p in enumerate(pcts):
                vals = [val(S[s].get("latency"), p) for s in order]
                bars = ax.bar([x + (i - 1) * w for x in range(len(order))], vals, w, label=p,
                              alpha=0.55 + 0.2 * i, color=[COLORS[s] for s in order])
                ax.bar_label(bars, fmt="%.2f", fontsize=6, rotation=90, padding=2)
            ax.set_title(f"latency, c=1 @ {data['settings']['latency_rate']} req/s (ms)\nbars: p50 / p90 / p99, "
                         "median of the rounds")
            ax.set_ylabel("ms")
        elif panel == "throughput":
            w = 0.38
            t = [val(S[s].get("throughput"), "rps") for s in order]
            lg = [val(S[s].get("large"), "rps") for s in order]
            b1 = ax.bar([x - w / 2 for x in range(len(order))], t, w, color=[COLORS[s] for s in order],
                        label=f"small, c={data['settings']['throughput_conc']}")
            b2 = ax.bar([x + w / 2 for x in range(len(order))], lg, w, color=[COLORS[s] for s in order],
                        alpha=0.45, hatch="//", label=f"{data['settings']['large_kib']} KiB, "
                                                      f"c={data['settings']['large_conc']}")
            ax.bar_label(b1, fmt="%.0f", fontsize=6, rotation=90, padding=2)
            ax.bar_label(b2, fmt="%.0f", fontsize=6, rotation=90, padding=2)
            ax.set_title("throughput (req/s)")
            ax.legend(fontsize=7)
        else:
            spec = data["settings"][panel]
            w = 0.38
            p50 = [val(S[s].get(panel), "ttft_ms.p50") for s in order]
            p99 = [val(S[s].get(panel), "ttft_ms.p99") for s in order]
            b1 = ax.bar([x - w / 2 for x in range(len(order))], p50, w, color=[COLORS[s] for s in order],
                        alpha=0.6, label="p50")
            b2 = ax.bar([x + w / 2 for x in range(len(order))], p99, w, color=[COLORS[s] for s in order],
                        label="p99")
            ax.bar_label(b1, fmt="%.1f", fontsize=6, rotation=90, padding=2)
            ax.bar_label(b2, fmt="%.1f", fontsize=6, rotation=90, padding=2)
            ax.set_title(f"TTFT, {spec['streams']:,} concurrent streams (ms)\nbars: p50 / p99")
            ax.set_ylabel("ms")
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels([LABELS[s] for s in order], fontsize=8)
        ax.margins(y=0.18)
    sep = "\n" if ncols == 1 else " "  # one narrow panel: the title on two lines
    fig.suptitle(f"llmproxy load test {data['started']}{sep}({data['profile']}, {data['machine']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
