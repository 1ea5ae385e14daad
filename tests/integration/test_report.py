"""The HTML report: self-contained, and rendered by headless Chromium with every plot decoded."""

import json
import os
import re
import shutil
import subprocess

import pytest

from shard_maker import make_full_root, make_out_root, make_score
from wit_builder import cli

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--disable-default-apps", "--enable-logging=stderr", "--v=0",
                  "--virtual-time-budget=5000", "--window-size=1280,1000"]

# Appended to a copy of the report: after load, count images that failed to decode.
PROBE = """<script>window.addEventListener("load", () => {
  const imgs = [...document.images];
  document.body.dataset.images = imgs.length;
  document.body.dataset.broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length;
  const cards = [...document.querySelectorAll("#samples figure.sample")];
  document.body.dataset.samples = cards.length;
  document.body.dataset.shown = cards.filter(c => {
    const img = c.querySelector("img"), caption = c.querySelector(".caption");
    return img && img.naturalWidth > 0 && img.naturalWidth <= 128 && img.getBoundingClientRect().width > 0
      && caption && caption.textContent.trim().length > 0 && caption.getBoundingClientRect().height > 0;
  }).length;
  document.body.dataset.scored = [...document.querySelectorAll(".scores figure.sample")].filter(c => {
    const img = c.querySelector("img");
    return img && img.naturalWidth > 0 && img.getBoundingClientRect().width > 0;
  }).length;
  document.body.dataset.drops = [...document.querySelectorAll(".drops")].map(g => g.dataset.reason).join(",");
  const wide = [...document.images].filter(i => i.alt === "Image sizes")[0];
  document.body.dataset.sizeswidth = wide ? Math.round(wide.getBoundingClientRect().width) : 0;
  document.body.dataset.pagewidth = document.documentElement.scrollWidth;
});</script>"""


INSTALL = "chromium not installed (apt-get install -y chromium chromium-driver)"


def chromium() -> str:
    """The browser; without one the real-browser test skips saying how to install it, except
    where WIT_REQUIRE_CHROMIUM=1 (CI, whose .ci/run installs it) makes its absence a failure."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("WIT_REQUIRE_CHROMIUM") == "1":
            pytest.fail(f"{INSTALL} (WIT_REQUIRE_CHROMIUM=1)")
        pytest.skip(INSTALL)
    return exe


def test_a_missing_chromium_skips_with_the_install_line_unless_required(monkeypatch):
    """Issue 25: the README's test command passes on a fresh machine without Chromium."""
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("WIT_REQUIRE_CHROMIUM", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y chromium"):
        chromium()
    monkeypatch.setenv("WIT_REQUIRE_CHROMIUM", "1")
    with pytest.raises(pytest.fail.Exception, match="WIT_REQUIRE_CHROMIUM"):
        chromium()


def dump_dom(page, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                           "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def report(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    make_full_root(shared_data / "images", root / "OUT")
    make_score(root / "OUT")  # the score stage ran: its distribution and extreme pairs are shown
    manifest = root / "OUT" / "match" / "manifest.json"  # a long regex, as filters have, in a config
    data = json.loads(manifest.read_text())
    data["config"]["caption_regex"] = "(?i)^(" + "|".join(f"word{i}" for i in range(200)) + ")$"
    manifest.write_text(json.dumps(data))
    page = root / "report.html"
    assert cli.main(["stats", str(root / "OUT"), "--html", str(page)]) == 0
    return page


def test_report_is_self_contained(report):
    text = report.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", text)
    assert "<script" not in text
    pngs = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', text)
    for title in ("Rows per stage", "Drops per stage and reason",
                  "Entry-count distribution before and after balancing", "Head / tail shares",
                  "Languages", "Caption length", "Image sizes", "Download status",
                  "Download errors", "Shard sizes", "CLIP score distribution"):
        assert title in pngs, title
    assert text.count('<figure class="sample"><img alt="sample ') >= 16 + 3
    assert "<h3>Dropped: eval_contamination</h3>" in text and "<th>Spark jobs</th>" in text
    assert "<td>dog</td>" in text  # top entries by name
    assert 'id="score-lowest"' in text and 'id="score-highest"' in text


def test_report_renders_in_chromium(report, tmp_path):
    plain = dump_dom(report, tmp_path)
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert "<h1>wit-builder stats</h1>" in plain.stdout
    assert not re.search(r"CONSOLE.*(Error|Uncaught)|Failed to load resource", plain.stderr), plain.stderr[-2000:]

    probed = tmp_path / "probed.html"
    probed.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    result = dump_dom(probed, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    images = int(re.search(r'data-images="(\d+)"', result.stdout).group(1))
    broken = int(re.search(r'data-broken="(\d+)"', result.stdout).group(1))
    assert images == report.read_text().count("<img ") >= 10
    assert broken == 0
    # the sample grid: every card shows its thumbnail and its caption
    samples = int(re.search(r'data-samples="(\d+)"', result.stdout).group(1))
    shown = int(re.search(r'data-shown="(\d+)"', result.stdout).group(1))
    assert samples == shown == 16
    drops = re.search(r'data-drops="([^"]*)"', result.stdout).group(1).split(",")
    assert {"too_small", "near_duplicate", "eval_contamination"} <= set(drops)
    assert int(re.search(r'data-scored="(\d+)"', result.stdout).group(1)) == 6  # 3 lowest + 3 highest
    # charts fill the page width (max 1100 px minus margins), not a third of it
    assert int(re.search(r'data-sizeswidth="(\d+)"', result.stdout).group(1)) >= 900
    # nothing pushes the page sideways (a long regex in a config table did)
    assert int(re.search(r'data-pagewidth="(\d+)"', result.stdout).group(1)) <= 1280


def test_absent_data_is_said_not_plotted(tmp_path, shared_data):
    out = tmp_path / "OUT"
    make_out_root(shared_data / "images", out)
    page = tmp_path / "download.html"
    assert cli.main(["stats", str(out / "download"), "--html", str(page)]) == 0
    text = page.read_text()
    assert "Download errors" in text and "Shard sizes" in text
    assert "Languages: no data" in text  # download rows carry no lang column
