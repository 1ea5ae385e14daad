"""Extract throughput: records/s and candidates/s per core, ours against a naive baseline.

Workloads (files repeated to last long enough to time):
  shared_warc  every intact WARC in ../shared/data/crawl/warc (mostly non-HTML records)
  pages_warc   the 80 saved pages with known URLs wrapped as WARC responses (HTML-heavy)

Measured in the same run on the same files:
  ours_1proc   wit_builder's per-file extractor (warcio + selectolax) in this one process
  ours_spark   the whole extract stage on local Spark (all cores), per core = rate / cores
  baseline     the common naive loop: warcio + BeautifulSoup(html.parser), one process

Run: .venv/bin/python tests/benchmarks/bench_extract.py [--quick] [--out results.json]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from urllib.parse import urljoin

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
SHARED = Path(os.environ.get("WIT_SHARED_DATA", REPO.parent / "shared" / "data"))


def _workloads(tmp: Path, repeat: int) -> dict[str, list[Path]]:
    from crawl_helpers import read_pages_tsv, write_warc

    warc_dir = SHARED / "crawl/warc"
    intact = [p for p in sorted(warc_dir.iterdir()) if not p.name.startswith(("corrupt_", "truncated_"))]
    html_dir = SHARED / "crawl/html"
    pages = [(url, (html_dir / name).read_bytes()) for name, url in sorted(read_pages_tsv(html_dir).items())]
    pages_warc = write_warc(tmp / "pages.warc.gz", pages)
    out = {}
    # the pages are ~40x more HTML per byte: fewer copies give a comparable duration
    for name, files, copies_of in (("shared_warc", intact, repeat),
                                   ("pages_warc", [pages_warc], max(1, repeat // 5))):
        folder = tmp / name
        folder.mkdir()
        copies = []
        for i in range(copies_of):
            for f in files:
                copies.append(folder / f"{i:03d}_{f.name}")
                shutil.copy(f, copies[-1])
        out[name] = copies
    return out


def _ours_1proc(files: list[Path]) -> dict:
    from wit_builder.extract.stage import InputFile, Options, extract_file
    from wit_builder.config import load_config

    opts = Options.from_config(load_config())
    records = candidates = 0
    start = time.perf_counter()
    for path in files:
        for batch in extract_file(InputFile(str(path), "warc"), opts):
            tally = batch.column("tally")
            if tally.null_count == len(tally):
                candidates += batch.num_rows
            else:
                counts = dict(zip(tally.to_pylist(), batch.column("n").to_pylist()))
                records += counts.get("records_read", 0)
    return {"seconds": time.perf_counter() - start, "records": records, "candidates": candidates}


def _baseline(files: list[Path]) -> dict:
    """What a first script does: warcio records, BeautifulSoup, find_all('img')."""
    from bs4 import BeautifulSoup
    from warcio.archiveiterator import ArchiveIterator

    records = candidates = 0
    start = time.perf_counter()
    for path in files:
        with open(path, "rb") as f:
            for record in ArchiveIterator(f):
                records += 1
                if record.rec_type != "response" or record.http_headers is None:
                    continue
                if "html" not in (record.http_headers.get_header("Content-Type") or ""):
                    continue
                page = record.rec_headers.get_header("WARC-Target-URI")
                soup = BeautifulSoup(record.content_stream().read(), "html.parser")
                for img in soup.find_all("img"):
                    alt, src = " ".join((img.get("alt") or "").split()), img.get("src")
                    if alt and src:
                        url = urljoin(page, src)
                        if url.startswith(("http://", "https://")):
                            candidates += 1
    return {"seconds": time.perf_counter() - start, "records": records, "candidates": candidates}


def _ours_spark(spark, path: Path, out: Path) -> dict:
    from wit_builder import pipeline
    from wit_builder.config import load_config

    start = time.perf_counter()
    run = pipeline.execute("extract", spark, load_config(None, ["extract.format=warc"]), [str(path)],
                         str(out), force=True, log=lambda _m: None)
    return {"seconds": time.perf_counter() - start, "records": run.manifest["records_read"],
            "candidates": run.manifest["rows_out"]}


def _rates(m: dict, cores: int) -> dict:
    return {**m, "seconds": round(m["seconds"], 3), "cores": cores,
            "records_per_s_per_core": round(m["records"] / m["seconds"] / cores, 1),
            "candidates_per_s_per_core": round(m["candidates"] / m["seconds"] / cores, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    repeat = 3 if args.quick else 20
    os.environ.setdefault("WIT_DRIVER_MEMORY", "1g")
    from wit_builder.spark import get_spark

    cores = os.cpu_count() or 1
    spark = get_spark(master=f"local[{cores}]", app_name="bench-extract")
    result = {"benchmark": "extract", "repeat": repeat, "machine": {
        "cores": cores, "python": platform.python_version(), "platform": platform.platform()}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, files in _workloads(Path(tmp), repeat).items():
            ours = _rates(_ours_1proc(files), 1)
            base = _rates(_baseline(files), 1)
            _ours_spark(spark, files[0], Path(tmp) / "warmup")  # Python workers start, import
            dist = _rates(_ours_spark(spark, files[0].parent, Path(tmp) / f"out_{name}"), cores)
            result[name] = {
                "files": len(files), "bytes": sum(f.stat().st_size for f in files),
                "ours_1proc": ours, "ours_spark": dist, "baseline_bs4_1proc": base,
                "speedup_1proc_records": round(base["seconds"] / ours["seconds"], 2),
            }
    result["versions"] = {name: metadata.version(name) for name in
                          ("pyspark", "pyarrow", "selectolax", "warcio", "beautifulsoup4")}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    spark.stop()


if __name__ == "__main__":
    main()
