"""The report's plots draw texts from the web as they are (issue 23 #7)."""

from wit_builder.stats import report

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
