"""The report's charts: matplotlib PNGs, base64 for embedding, drawn at the page's width.

A chart whose data is absent is None (the page then says "no data").
"""

from __future__ import annotations

import base64
import io

import numpy as np

PAGE_WIDTH_IN, DPI = 10.5, 100  # a full-width figure is 1050 px: the page is 1100 px at most
# Labels hold texts from the web (error reasons with a server's reason phrase, entry names,
# shard names): `$...$` in them must stay text, not be parsed as mathtext (a parse error is a
# traceback). Our own labels use no mathtext either.
RC = {"font.size": 12, "axes.titlesize": 14, "axes.labelsize": 12, "xtick.labelsize": 11,
      "ytick.labelsize": 11, "legend.fontsize": 11, "text.parse_math": False}


def _png(draw, width: float = PAGE_WIDTH_IN, height: float = 4.2, panels: int = 1) -> str:
    """Run draw(ax) (draw(axes) when `panels` > 1) on a fresh figure; return it as a base64 PNG.

    Figures are drawn at the size they are shown (full page width at 100 dpi), so text is
    never scaled down by the browser."""
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
        axes = fig.subplots(1, panels)
        draw(axes)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _barh(ax, items: dict, title: str, xlabel: str = "count") -> None:
    labels, values = list(items)[::-1], list(items.values())[::-1]
    ax.barh(range(len(values)), values, color="#4c72b0")
    ax.set_yticks(range(len(values)), [str(label)[:60] for label in labels])
    ax.set_title(title)
    ax.set_xlabel(xlabel)


def _legend_beside(ax) -> None:
    """The legend right of the axes: over bars that fill the plot it would hide some."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)


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
        _legend_beside(ax)
    return _png(draw, PAGE_WIDTH_IN / 2, 4.2)


def _score_histogram(histogram: dict | None, scored: int | None, threshold: float | None,
                     threshold_label: str, xlabel: str, title: str, what: str,
                     median: float | None = None) -> str | None:
    """A histogram of scores (`edges`, `counts`) with its threshold (and median) marked."""
    if not histogram or not sum(histogram["counts"]):
        return None

    def draw(ax):
        ax.stairs(histogram["counts"], histogram["edges"], fill=True, color="#4c72b0",
                  label=f"{scored or sum(histogram['counts']):,} {what} scored")
        if median is not None:
            ax.axvline(median, color="grey", linestyle=":", label=f"median {median:.3f}")
        if threshold is not None and histogram["edges"][0] <= threshold <= histogram["edges"][-1]:
            ax.axvline(threshold, color="#c44e52", linestyle="--",
                       label=f"threshold {threshold:.3f} ({threshold_label})")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(what)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set_title(title)
        ax.legend()
    return _png(draw)


def plot_clip_scores(cs: dict | None) -> str | None:
    """The score stage's histogram of CLIP scores, with its threshold and median."""
    cs = cs or {}
    return _score_histogram(cs.get("histogram"), cs.get("scored"), cs.get("threshold"),
                            "kept: >=", "CLIP score (cosine similarity of image and caption)",
                            "CLIP score distribution", "pairs",
                            (cs.get("quantiles") or {}).get("0.5"))


def plot_nsfw_scores(nsfw: dict | None) -> str | None:
    """The screen stage's histogram of NSFW scores, with the report's threshold."""
    nsfw = nsfw or {}
    return _score_histogram(nsfw.get("histogram"), nsfw.get("scored"), nsfw.get("threshold"),
                            "above: counted, never shown", "nsfw_score (NudeNet 320n)",
                            "NSFW score distribution", "samples")


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
        _legend_beside(ax)
    return _png(draw)


def plot_drops(pipeline: list) -> str | None:
    items = {f"{p['stage']}: {reason}": n for p in pipeline for reason, n in p.get("drops", {}).items()}
    if not items:
        return None
    return _png(lambda ax: _barh(ax, items, "Drops per stage and reason"),
                height=max(3, 0.32 * len(items) + 1.2))


def plot_counts(items: dict | None, title: str) -> str | None:
    if not items:
        return None
    return _png(lambda ax: _barh(ax, items, title), height=max(3, 0.32 * len(items) + 1.2))


def plot_hist(summaries: dict, title: str, xlabel: str) -> str | None:
    """Histograms from collect's {"step", "hist"} summaries, one line per named series."""
    summaries = {k: v for k, v in summaries.items() if v}
    if not summaries:
        return None

    def draw(ax):
        for label, s in summaries.items():
            merge = -(-len(s["hist"]) // 60)  # at most ~60 bars, however fine the counts are
            counts, edges = _merged(s, merge)
            ax.stairs(counts, edges, label=label, fill=len(summaries) == 1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("count")
        ax.set_title(title)
        if len(summaries) > 1:
            ax.legend()
    return _png(draw)


def _merged(s: dict, merge: int) -> tuple[np.ndarray, np.ndarray]:
    counts = np.asarray(s["hist"])
    counts = np.pad(counts, (0, -len(counts) % merge)).reshape(-1, merge).sum(axis=1)
    return counts, np.arange(len(counts) + 1) * s["step"] * merge


def plot_image_sizes(resized: dict | None, original: dict | None) -> str | None:
    """Widths and heights in two panels side by side (they no longer hide each other), each
    with the sizes written to the shards and, when known, the original sizes before the resize."""
    series = {"in the shards": resized or {}, "original": original or {}}
    series = {k: v for k, v in series.items() if v.get("width") and v.get("height")}
    if not series:
        return None
    longest = max(len(v[side]["hist"]) * v[side]["step"] for v in series.values() for side in ("width", "height"))
    step = min(v[side]["step"] for v in series.values() for side in ("width", "height"))
    merge = max(1, -(-longest // step // 60))  # at most ~60 bars, one bin width for every series

    def draw(axes):
        for ax, side in zip(axes, ("width", "height")):
            for (label, v), style in zip(series.items(), (dict(fill=True, alpha=0.55, color="#4c72b0"),
                                                         dict(fill=False, linewidth=2, color="#dd8452"))):
                counts, edges = _merged(v[side], merge)
                ax.stairs(counts, edges, label=f"{label} (median {v[side]['p50']})", **style)
            ax.set_title(f"Image {side}" + (", before and after the resize" if len(series) > 1 else ""))
            ax.set_xlabel(f"{side} (pixels)")
            ax.set_ylabel("images")
            ax.legend(loc="best", fontsize=10)
    return _png(draw, height=4.2, panels=2)


def plot_shards(sh: dict | None) -> str | None:
    if not sh or not sh["per_shard"]:
        return None

    def draw(ax):
        names = list(sh["per_shard"])
        samples = [v["samples"] for v in sh["per_shard"].values()]
        if len(names) <= 40:
            ax.bar(range(len(names)), samples, color="#55a868")
            ax.set_xticks(range(len(names)), [n.removesuffix(".tar") for n in names], rotation=90, fontsize=9)
            ax.set_ylabel("samples")
        else:
            ax.hist(samples, bins=40, color="#55a868")
            ax.set_xlabel("samples per shard")
        ax.set_title(f"Shard sizes ({len(names):,} shards)")
    return _png(draw)
