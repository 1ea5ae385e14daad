"""`wit-builder stats`: the numbers of collect.py as a terminal table, JSON, or one HTML page.

The HTML page is self-contained: plots are matplotlib PNGs embedded as base64 `<img>`, styles
inline, no scripts and no external resources. A plot whose data is absent becomes a short
"no data" line instead.
"""

from __future__ import annotations

import html
import json
import sys


from wit_builder import stages, storage
from wit_builder.stats import plots, screen
from wit_builder.stats.collect import collect, to_json

SAMPLE_IMAGES = 16  # random samples of the final shards shown in the HTML report
DROP_SAMPLES = 3  # and dropped samples per finalize drop reason


def command(path: str, json_to: str | None = None, html_file: str | None = None,
            top: int = 20) -> dict:
    """`wit-builder stats`: the tables (unless the JSON goes to stdout: `json_to` "-"), the JSON
    into `json_to`, the HTML report into `html_file`."""
    stats = collect(path, top, samples=SAMPLE_IMAGES if html_file else 0, drop_samples=DROP_SAMPLES)
    if json_to != "-":
        print_tables(stats)
    if json_to:
        storage.write_report(json_to, to_json(stats))
    if html_file:
        storage.write_bytes_atomic(html_file, render_html(stats).encode())
        print(f"wrote {html_file}", file=sys.stderr if json_to == "-" else sys.stdout)
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
    if im := s.get("original_sizes"):
        facts.append(("original width / height", f"median {im['width']['p50']} / {im['height']['p50']} px "
                                                 f"(mean {im['width']['mean']} / {im['height']['mean']}), "
                                                 "before the resize"))
    if langs := s.get("languages"):
        facts.append(("languages", ", ".join(f"{k} {v:,}" for k, v in list(langs.items())[:6])
                      + f" ({s.get('language_count', len(langs))} in all)"))
    if d := s.get("download"):
        facts.append(("download status", _drops_text(d["status"], 6)))
        if d["errors"]:
            facts.append(("top errors", _drops_text(d["errors"], 3)))
    if (cs := s.get("clip_score")) and cs.get("scored"):
        q = cs.get("quantiles") or {}
        facts.append(("CLIP score", f"{cs['scored']:,} pairs scored: mean {cs['mean']:.3f}, p10 "
                                    f"{q.get('0.1', 0):.3f}, median {q.get('0.5', 0):.3f}, p90 {q.get('0.9', 0):.3f}; "
                                    f"kept when >= {cs['threshold']:.4f}"))
    if sc := s.get("screen"):
        facts += screen.facts(sc)
    if e := s.get("entry_counts"):
        facts.append(("entries (t = %s)" % _fmt(e["t"]),
                      f"{e['entries']:,} entries, {e['head_entries']:,} head; pairs "
                      f"{e['pairs_before']:,} -> {e['pairs_after']:,}; head share "
                      f"{e['head_share_before']:.1%} -> {e['head_share_after']:.1%}"))
        facts.append(("capped at t", capped_text(e)))
    return facts


def capped_text(e: dict) -> str:
    """How many entries balance cut, from the counts: above t is not cut when every pair stayed."""
    capped = e.get("capped_entries", 0)
    cut = (f"{capped:,} of {e['entries']:,} ({e.get('capped_share', 0):.1%}) were cut to about t"
           if capped else "none was cut")
    return f"{e['head_entries']:,} entries had more than t pairs; {cut}"


def entry_name(e: dict, entry_id: int) -> str:
    names = e.get("names") or {}
    return names.get(entry_id) or names.get(str(entry_id)) or f"#{entry_id}"


def top_entry_rows(e: dict) -> list[list]:
    """[rank, name, id, before, after, kept share] of the top entries by pairs before balancing."""
    return [[i + 1, entry_name(e, eid), eid, _fmt(before), _fmt(after),
             f"{after / before:.0%}" if before else ""]
            for i, (eid, before, after) in enumerate(e["top"])]


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
        if (e := s.get("entry_counts")) and e["top"]:
            table = Table(title=f"{name}: top entries (t = {e['t']:,})")
            for col in ("rank", "entry", "id", "before", "after", "kept"):
                table.add_column(col, justify="left" if col == "entry" else "right")
            for row in top_entry_rows(e):
                table.add_row(*map(str, row))
            console.print(table)


# --- HTML ---------------------------------------------------------------------------------

STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;padding:0 1em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1em}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:left;font-size:14px;vertical-align:top;overflow-wrap:anywhere}td.num{text-align:right}figure{margin:0.8em 0}
figure.half{display:inline-block;width:49%}img{max-width:100%}.none{color:#888;font-style:italic}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(160px,1fr));gap:10px;margin:0.5em 0 1.5em}
.sample{margin:0;padding:6px;border:1px solid #ddd;border-radius:4px;font-size:12px;overflow-wrap:anywhere}
.sample img{display:block;margin:0 auto 4px;max-width:128px;max-height:128px}
.sample .caption{margin:2px 0}.sample .meta{color:#666;margin:2px 0}
details{margin:0.3em 0}pre{font-size:12px;background:#f6f6f6;padding:6px;overflow-x:auto}"""


def _figure(title: str, png: str | None, half: bool = False) -> str:
    if png is None:
        return f'<p class="none">{html.escape(title)}: no data</p>'
    cls = ' class="half"' if half else ""
    return (f'<figure{cls}><img alt="{html.escape(title)}" src="data:image/png;base64,{png}">'
            f'<figcaption>{html.escape(title)}</figcaption></figure>')


def _table(rows: list[list], header: list[str] | None = None) -> str:
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" if header else ""
    cell = lambda c: (f'<td class="num">{html.escape(_fmt(c))}</td>' if isinstance(c, (int, float))
                      and not isinstance(c, bool) else f"<td>{html.escape(str(c))}</td>")
    body = "".join("<tr>" + "".join(cell(c) for c in r) + "</tr>" for r in rows)
    return f"<table>{head}{body}</table>"


def _flat(config: dict, prefix: str = "") -> list[list]:
    rows = []
    for k, v in config.items():
        if isinstance(v, dict) and v:
            rows += _flat(v, f"{prefix}{k}.")
        else:
            rows.append([f"{prefix}{k}", json.dumps(v, default=str)])
    return rows


def pipeline_rows(pipeline: list) -> list[list]:
    """[stage, rows in, rows out, dropped, reasons, seconds, rows/s, Spark jobs] per stage."""
    return [[p["stage"], p.get("rows_in", ""), p.get("rows_out", ""), sum(p.get("drops", {}).values()),
             _drops_text(p.get("drops", {}), 10),
             f"{p['seconds']:,.1f}" if isinstance(p.get("seconds"), (int, float)) else "",
             f"{p['rows_per_second']:,.0f}" if "rows_per_second" in p else "",
             p.get("spark_jobs", "")] for p in pipeline]


def _runs_html(stats: dict) -> list[str]:
    """Each stage's config section and the library versions it ran with."""
    parts = []
    configs = {name: s["config"] for name, s in stats["stages"].items() if s.get("config")}
    versions = {name: s["versions"] for name, s in stats["stages"].items() if s.get("versions")}
    if configs:
        parts.append("<h2>Config</h2>")
        for name, config in configs.items():
            parts.append(f"<h3>{html.escape(name)}</h3>" + _table(_flat(config), ["key", "value"]))
    if versions:
        libs = sorted({lib for v in versions.values() for lib in v}, key=lambda k: (k != "python", k))
        parts.append("<h2>Versions</h2>")
        parts.append(_table([[name, *(v.get(lib, "") for lib in libs)] for name, v in versions.items()],
                            ["stage", *libs]))
    return parts


def _sample_card(item: dict) -> str:
    caption = html.escape(item.get("caption") or "")
    entries = item.get("entries") or [f"#{i}" for i in item.get("entry_ids", [])]
    size = ""
    if item.get("width"):
        size = f"{item['width']}×{item.get('height')} px"
        if item.get("original_width") and (item["original_width"], item.get("original_height")) != \
                (item["width"], item.get("height")):
            size += f" (original {item['original_width']}×{item.get('original_height')})"
    alt = html.escape(f"sample {item.get('key', '')}: {item.get('caption', '')[:80]}")
    image = (f'<img alt="{alt}" src="data:image/jpeg;base64,{item["thumb"]}">' if item.get("thumb")
             else f'<p class="none">{html.escape(item.get("hidden") or "image does not decode")}</p>')
    meta = [f"entries: {html.escape(', '.join(map(str, entries)))}" if entries else "",
            html.escape(size), html.escape(f"{item.get('shard', '')} {item.get('key', '')}".strip()),
            f"CLIP score {item['clip_score']:.3f}" if isinstance(item.get("clip_score"), float) else ""]
    return (f'<figure class="sample">{image}<figcaption><p class="caption">{caption}</p>'
            + "".join(f'<p class="meta">{m}</p>' for m in meta if m) + "</figcaption></figure>")


def samples_html(s: dict) -> list[str]:
    parts = []
    if s.get("samples") is not None:
        parts.append(f"<h3>Random samples ({len(s['samples'])}, seeded)</h3>")
        parts.append('<div class="grid" id="samples">' + "".join(_sample_card(i) for i in s["samples"])
                     + "</div>" if s["samples"] else '<p class="none">Random samples: no data</p>')
    for reason, items in (s.get("drop_samples") or {}).items():
        parts.append(f"<h3>Dropped: {html.escape(reason)}</h3>")
        parts.append(f'<div class="grid drops" data-reason="{html.escape(reason)}">'
                     + "".join(_sample_card(i) for i in items) + "</div>")
    return parts


def score_html(s: dict) -> list[str]:
    """The score stage's CLIP-score histogram and its lowest and highest scored pairs."""
    parts = [_figure("CLIP score distribution", plots.plot_clip_scores(s["clip_score"]))]
    for side in ("lowest", "highest"):
        if items := (s.get("score_samples") or {}).get(side):
            parts.append(f"<h3>{side.capitalize()} CLIP scores ({len(items)})</h3>")
            parts.append(f'<div class="grid scores" id="score-{side}">'
                         + "".join(_sample_card(i) for i in items) + "</div>")
    return parts


def render_html(stats: dict) -> str:
    parts = [f"<h1>wit-builder stats</h1><p>{html.escape(stats['path'])}</p>"]
    pipeline = stats["pipeline"]
    if pipeline:
        parts.append("<h2>Pipeline</h2>")
        parts.append(_table(pipeline_rows(pipeline), ["stage", "rows in", "rows out", "dropped", "reasons",
                                                      "seconds", "rows/s", "Spark jobs"]))
        parts.append(_figure("Rows per stage", plots.plot_pipeline(pipeline)))
        parts.append(_figure("Drops per stage and reason", plots.plot_drops(pipeline)))
    shown_captions = (None, None)  # (stage, caption lengths) of the last histogram shown
    for name, s in stats["stages"].items():
        parts.append(f"<h2>{html.escape(name)}</h2>")
        parts.append(_table([list(f) for f in stage_facts(s)] or [["", "no data"]]))
        parts += samples_html(s)
        if s.get("clip_score") is not None:
            parts += score_html(s)
        if s.get("screen") is not None:
            parts.append(_figure("NSFW score distribution", screen.histogram(s["screen"])))
        e = s.get("entry_counts")
        if e or name in ("balance", "finalize"):
            parts.append(_figure("Entry-count distribution before and after balancing", plots.plot_entry_counts(e)))
            parts.append(_figure("Head / tail shares", plots.plot_head_tail(e), half=True))
        if e and e["top"]:
            parts.append(f"<h3>Top {len(e['top'])} entries by pairs before balancing (t = {e['t']:,})</h3>")
            parts.append(f"<p>{capped_text(e)}.</p>")
            parts.append(_table(top_entry_rows(e), ["rank", "entry", "id", "pairs before", "pairs after", "kept"]))
        parts.append(_figure("Languages", plots.plot_counts(s.get("languages"), "Languages")))
        if s.get("caption_chars") != shown_captions[1] or shown_captions[0] is None:
            parts.append(_figure("Caption length", plots.plot_hist({"caption": s.get("caption_chars")},
                                                             "Caption length", "characters")))
            shown_captions = (name, s.get("caption_chars"))
        else:  # the same captions as the stage above: its histogram stands
            parts.append(f'<p class="none">Caption length: as in {html.escape(shown_captions[0])}</p>')
        sizes = s.get("image_sizes") or {}
        if sizes or s.get("shards"):
            parts.append(_figure("Image sizes", plots.plot_image_sizes(sizes, s.get("original_sizes"))))
        d = s.get("download") or {}
        if d or name == "download":
            parts.append(_figure("Download status", plots.plot_counts(d.get("status"), "Download status")))
            parts.append(_figure("Download errors", plots.plot_counts(d.get("errors"), "Error reasons")))
        if s.get("shards"):
            parts.append(_figure("Shard sizes", plots.plot_shards(s["shards"])))
    parts += _runs_html(stats)
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>wit-builder stats</title><style>{STYLE}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")


def write_stats(out: str, cfg, log=print) -> None:
    """OUT/stats/stats.json (and report.html): every stage of this output root."""
    stats = collect(out, cfg.stats.top_entries, samples=SAMPLE_IMAGES if cfg.run.html_report else 0,
                    drop_samples=DROP_SAMPLES)
    target = storage.join(out, "stats")
    storage.write_bytes_atomic(storage.join(target, "stats.json"), to_json(stats).encode())
    if cfg.run.html_report:
        storage.write_bytes_atomic(storage.join(target, "report.html"), render_html(stats).encode())
    log(f"stats: {len(stats['pipeline'])} stages -> {target}")


# --- as the last stage of a chain (the registry's `stats`) ----------------------------------

def check(cfg, inputs: list[str]) -> stages.Plan:
    """Nothing to check: the report reads whatever the output root holds."""
    return stages.Plan(inputs)


def run(ctx: stages.Context, plan: stages.Plan) -> None:
    write_stats(ctx.out, ctx.cfg, ctx.log)
