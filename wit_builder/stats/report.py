"""`wit-builder stats`: the numbers of collect.py as a terminal table, JSON, or one HTML page.

The HTML page is self-contained: plots are matplotlib PNGs embedded as base64 `<img>`, styles
inline, no scripts and no external resources. A plot whose data is absent becomes a short
"no data" line instead.
"""

from __future__ import annotations

import base64
import html
import io
import sys

import numpy as np

from wit_builder import storage
from wit_builder.stats.collect import collect, to_json


def command(path: str, as_json: bool = False, html_file: str | None = None, top: int = 20) -> dict:
    stats = collect(path, top)
    if as_json:
        print(to_json(stats))
    else:
        print_tables(stats)
    if html_file:
        storage.write_bytes_atomic(html_file, render_html(stats).encode())
        print(f"wrote {html_file}", file=sys.stderr if as_json else sys.stdout)
    return stats


# --- terminal -----------------------------------------------------------------------------

def _fmt(n) -> str:
    return f"{n:,}" if isinstance(n, int) else str(n)


def _drops_text(drops: dict, limit: int = 4) -> str:
    items = sorted(drops.items(), key=lambda kv: -kv[1])
    text = ", ".join(f"{k} {v:,}" for k, v in items[:limit])
    return text + (f", +{len(items) - limit} more" if len(items) > limit else "")


def stage_facts(s: dict) -> list[tuple[str, str]]:
    """(label, value) lines summarising one stage's statistics (terminal and HTML share them)."""
    facts = []
    if "rows" in s:
        facts.append(("parquet rows", _fmt(s["rows"])))
    if sh := s.get("shards"):
        facts.append(("shards", f"{sh['count']:,} tars, {sh['samples']:,} samples, "
                                f"{sh['bytes'] / 1e6:,.1f} MB (counts from {sh['counted_from']})"))
        if "consistent" in sh:
            facts.append(("sizes.json vs _stats.json", "agree" if sh["consistent"] else "DISAGREE"))
        if unfinished := sh.get("unfinished"):
            facts.append(("unfinished shards", f"{len(unfinished):,} ({', '.join(unfinished[:3])}"
                          f"{', ...' if len(unfinished) > 3 else ''}: _stats.json cut, not counted; "
                          "rerun download to redo them)"))
    if c := s.get("caption_chars"):
        facts.append(("caption chars", f"mean {c['mean']}, median {c['p50']}, p90 {c['p90']}, p99 {c['p99']}"))
    if im := s.get("image_sizes"):
        facts.append(("image width / height", f"median {im['width']['p50']} / {im['height']['p50']} px "
                                              f"(mean {im['width']['mean']} / {im['height']['mean']})"))
    if langs := s.get("languages"):
        facts.append(("languages", ", ".join(f"{k} {v:,}" for k, v in list(langs.items())[:6])
                      + f" ({s.get('language_count', len(langs))} in all)"))
    if d := s.get("download"):
        facts.append(("download status", _drops_text(d["status"], 6)))
        if d["errors"]:
            facts.append(("top errors", _drops_text(d["errors"], 3)))
    if e := s.get("entry_counts"):
        facts.append(("entries (t = %s)" % _fmt(e["t"]),
                      f"{e['entries']:,} entries, {e['head_entries']:,} head; pairs "
                      f"{e['pairs_before']:,} -> {e['pairs_after']:,}; head share "
                      f"{e['head_share_before']:.1%} -> {e['head_share_after']:.1%}"))
    return facts


def print_tables(stats: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    if stats["pipeline"]:
        table = Table(title=f"wit-builder stats: {stats['path']}")
        for col, justify in (("stage", "left"), ("rows in", "right"), ("rows out", "right"),
                             ("dropped", "right"), ("drop reasons", "left"), ("seconds", "right")):
            table.add_column(col, justify=justify)
        for p in stats["pipeline"]:
            drops = p.get("drops", {})
            table.add_row(p["stage"], _fmt(p.get("rows_in", "")), _fmt(p.get("rows_out", "")),
                          _fmt(sum(drops.values())), _drops_text(drops), str(p.get("seconds", "")))
        console.print(table)
    for name, s in stats["stages"].items():
        table = Table(title=f"{name} ({s['path']})", show_header=False)
        table.add_column("what", style="bold")
        table.add_column("value")
        for label, value in stage_facts(s) or [("", "no data")]:
            table.add_row(label, value)
        console.print(table)


# --- plots --------------------------------------------------------------------------------

def _png(draw, width: float = 6.4, height: float = 3.6) -> str:
    """Run draw(ax) on a fresh figure and return it as a base64 PNG."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=96, layout="constrained")
    draw(fig.add_subplot())
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _barh(ax, items: dict, title: str, xlabel: str = "count") -> None:
    labels, values = list(items)[::-1], list(items.values())[::-1]
    ax.barh(range(len(values)), values, color="#4c72b0")
    ax.set_yticks(range(len(values)), [str(label)[:60] for label in labels], fontsize=8)
    ax.set_title(title)
    ax.set_xlabel(xlabel)


def plot_entry_counts(e: dict) -> str | None:
    if not e or not e["rank_before"]:
        return None

    def draw(ax):
        for key, label in (("rank_before", "before balancing"), ("rank_after", "after balancing")):
            if e[key]:
                ranks, counts = zip(*e[key])
                ax.plot(ranks, counts, marker=".", label=label)
        ax.axhline(e["t"], color="grey", linestyle="--", label=f"t = {e['t']:,}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("entry rank")
        ax.set_ylabel("pairs per entry")
        ax.set_title("Entry-count distribution (log-log)")
        ax.legend()
    return _png(draw)


def plot_head_tail(e: dict) -> str | None:
    if not e or not e["pairs_before"]:
        return None

    def draw(ax):
        heads = [e["head_share_before"], e["head_share_after"]]
        names = ["before", "after"]
        ax.bar(names, heads, color="#c44e52", label=f"head ({e['head_entries']:,} entries > t)")
        ax.bar(names, [1 - h for h in heads], bottom=heads, color="#4c72b0", label="tail")
        ax.set_ylabel("share of pairs")
        ax.set_title("Head / tail shares")
        ax.legend()
    return _png(draw, 4.8, 3.6)


def plot_pipeline(pipeline: list) -> str | None:
    if not pipeline:
        return None

    def draw(ax):
        names = [p["stage"] for p in pipeline]
        x = np.arange(len(names))
        ax.bar(x - 0.2, [p.get("rows_in", 0) for p in pipeline], 0.4, label="rows in")
        ax.bar(x + 0.2, [p.get("rows_out", 0) for p in pipeline], 0.4, label="rows out")
        ax.set_xticks(x, names)
        ax.set_title("Rows per stage")
        ax.legend()
    return _png(draw)


def plot_drops(pipeline: list) -> str | None:
    items = {f"{p['stage']}: {reason}": n for p in pipeline for reason, n in p.get("drops", {}).items()}
    if not items:
        return None
    return _png(lambda ax: _barh(ax, items, "Drops per stage and reason"),
                height=max(2.5, 0.28 * len(items) + 1))


def plot_counts(items: dict | None, title: str) -> str | None:
    if not items:
        return None
    return _png(lambda ax: _barh(ax, items, title), height=max(2.5, 0.28 * len(items) + 1))


def plot_hist(summaries: dict, title: str, xlabel: str) -> str | None:
    """Histograms from collect's {"step", "hist"} summaries, one line per named series."""
    summaries = {k: v for k, v in summaries.items() if v}
    if not summaries:
        return None

    def draw(ax):
        for label, s in summaries.items():
            counts = np.asarray(s["hist"])
            merge = -(-len(counts) // 60)  # at most ~60 bars, however fine the counts are
            counts = np.pad(counts, (0, -len(counts) % merge)).reshape(-1, merge).sum(axis=1)
            edges = np.arange(len(counts) + 1) * s["step"] * merge
            ax.stairs(counts, edges, label=label, fill=len(summaries) == 1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("count")
        ax.set_title(title)
        if len(summaries) > 1:
            ax.legend()
    return _png(draw)


def plot_shards(sh: dict | None) -> str | None:
    if not sh or not sh["per_shard"]:
        return None

    def draw(ax):
        names = list(sh["per_shard"])
        samples = [v["samples"] for v in sh["per_shard"].values()]
        if len(names) <= 40:
            ax.bar(range(len(names)), samples, color="#55a868")
            ax.set_xticks(range(len(names)), [n.removesuffix(".tar") for n in names], rotation=90, fontsize=7)
            ax.set_ylabel("samples")
        else:
            ax.hist(samples, bins=40, color="#55a868")
            ax.set_xlabel("samples per shard")
        ax.set_title(f"Shard sizes ({len(names):,} shards)")
    return _png(draw)


# --- HTML ---------------------------------------------------------------------------------

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1em}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:left;font-size:14px}figure{display:inline-block;margin:0.5em}
img{max-width:100%}.none{color:#888;font-style:italic}"""


def _figure(title: str, png: str | None) -> str:
    if png is None:
        return f'<p class="none">{html.escape(title)}: no data</p>'
    return (f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{png}">'
            f'<figcaption>{html.escape(title)}</figcaption></figure>')


def _table(rows: list[list], header: list[str] | None = None) -> str:
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table>{head}{body}</table>"


def render_html(stats: dict) -> str:
    parts = [f"<h1>wit-builder stats</h1><p>{html.escape(stats['path'])}</p>"]
    pipeline = stats["pipeline"]
    if pipeline:
        parts.append("<h2>Pipeline</h2>")
        parts.append(_table([[p["stage"], _fmt(p.get("rows_in", "")), _fmt(p.get("rows_out", "")),
                              _fmt(sum(p.get("drops", {}).values())), _drops_text(p.get("drops", {}), 10)]
                             for p in pipeline], ["stage", "rows in", "rows out", "dropped", "reasons"]))
        parts.append(_figure("Rows per stage", plot_pipeline(pipeline)))
        parts.append(_figure("Drops per stage and reason", plot_drops(pipeline)))
    for name, s in stats["stages"].items():
        parts.append(f"<h2>{html.escape(name)}</h2>")
        parts.append(_table([list(f) for f in stage_facts(s)] or [["", "no data"]]))
        e = s.get("entry_counts")
        if e or name in ("balance", "finalize"):
            parts.append(_figure("Entry-count distribution before and after balancing", plot_entry_counts(e)))
            parts.append(_figure("Head / tail shares", plot_head_tail(e)))
        parts.append(_figure("Languages", plot_counts(s.get("languages"), "Languages")))
        parts.append(_figure("Caption length", plot_hist({"caption": s.get("caption_chars")},
                                                         "Caption length", "characters")))
        sizes = s.get("image_sizes") or {}
        if sizes or s.get("shards"):
            parts.append(_figure("Image sizes", plot_hist(sizes, "Image sizes", "pixels")))
        d = s.get("download") or {}
        if d or name == "download":
            parts.append(_figure("Download status", plot_counts(d.get("status"), "Download status")))
            parts.append(_figure("Download errors", plot_counts(d.get("errors"), "Error reasons")))
        if s.get("shards"):
            parts.append(_figure("Shard sizes", plot_shards(s["shards"])))
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>wit-builder stats</title><style>{STYLE}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")


def write_stats(out: str, cfg, log=print) -> None:
    """OUT/stats/stats.json (and report.html): every stage of this output root."""
    stats = collect(out, cfg.stats.top_entries)
    target = storage.join(out, "stats")
    storage.write_bytes_atomic(storage.join(target, "stats.json"), to_json(stats).encode())
    if cfg.run.html_report:
        storage.write_bytes_atomic(storage.join(target, "report.html"), render_html(stats).encode())
    log(f"stats: {len(stats['pipeline'])} stages -> {target}")
