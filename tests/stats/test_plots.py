"""The report's plots draw texts from the web as they are (issue 23 #7)."""

from wit_builder.stats import plots, report

WEB_TEXTS = ["404 $\\foo$", "a $x^{$ b", "$$", "500 \\frac{"]  # reason phrases a server chose


def test_web_texts_with_dollar_signs_are_plain_labels():
    """An HTTP reason phrase like `404 $\\foo$` in the download errors (and shard names, entry
    names, languages alike) was parsed as mathtext: a traceback instead of the report."""
    download = {"status": {"success": 3, "failed_to_download": 4},
                "errors": {text: i + 1 for i, text in enumerate(WEB_TEXTS)}}
    stats = {"path": "OUT", "pipeline": [{"stage": "download", "rows_in": 7, "rows_out": 3,
                                          "drops": {WEB_TEXTS[0]: 4}}],
             "stages": {"download": {"path": "OUT/download", "download": download,
                                     "languages": {"$\\bad$": 2}}}}
    page = report.render_html(stats)
    for title in ("Download errors", "Drops per stage and reason", "Languages"):
        assert f'<img alt="{title}" src="data:image/png;base64,' in page


def _drawn(monkeypatch, plot, *args):
    """The matplotlib figure `plot(*args)` renders, laid out as saved."""
    from matplotlib.figure import Figure

    figures = []
    save = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: (figures.append(fig), save(fig, *a, **k)))
    assert plot(*args) is not None
    return figures[0]


def test_legends_never_cover_a_bar(monkeypatch):
    """Head/tail bars fill the plot up to 1.0 and rows-per-stage bars the top: a legend placed in
    the axes covered some of them (issue 25)."""
    e = {"pairs_before": 100, "head_share_before": 0.7, "head_share_after": 0.2, "head_entries": 3}
    pipeline = [{"stage": s, "rows_in": 1000 - 100 * i, "rows_out": 950 - 100 * i}
                for i, s in enumerate(["extract", "match", "filter", "balance", "download", "finalize"])]
    for fig in (_drawn(monkeypatch, plots.plot_head_tail, e),
                _drawn(monkeypatch, plots.plot_pipeline, pipeline)):
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        renderer = FigureCanvasAgg(fig).get_renderer()
        fig.draw(renderer)  # laid out (constrained) as when it was saved
        ax = fig.axes[0]
        legend = ax.get_legend().get_window_extent(renderer)
        bars = [p.get_window_extent(renderer) for p in ax.patches]
        assert bars and not any(legend.overlaps(bar) for bar in bars)


def _stage(chars):
    return {"path": "OUT/x", "caption_chars": {"step": 10, "hist": chars, "mean": 14.0, "p50": 12,
                                                "p90": 25, "p99": 29}}


def test_the_caption_histogram_is_shown_where_it_changes():
    """Six stages drew the same caption-length histogram six times (a 14,000 px page): a stage
    whose captions are those of the stage above says so instead."""
    same, fewer = [5, 9, 3], [5, 8, 3]
    stats = {"path": "OUT", "pipeline": [],
             "stages": {"extract": _stage(same), "match": _stage(same), "filter": _stage(fewer),
                        "balance": _stage(fewer), "download": _stage(fewer), "finalize": _stage(same)}}
    page = report.render_html(stats)
    assert page.count('<img alt="Caption length"') == 3  # extract, filter, finalize
    assert page.count("Caption length: as in extract") == 1
    assert page.count("Caption length: as in filter") == 2
