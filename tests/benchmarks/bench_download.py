"""Download throughput and CPU per image: our download stage against img2dataset (at 32 and 128
threads) and against our previous engine (one thread per URL, a connection per image), on the
servers of the shared peer tool (../shared/tools/peer_img2dataset.py: the Flickr8k photos, one
site per 127.0.0.N, TLS, lognormal latency, 2% 404s), alternating the tools over rounds.

Each tool runs in a subprocess of its own on `local[2]` with 2 processes; the CPU it used (with
its JVM and Spark's Python workers, read from /proc) is measured per 1,000 images, the server's
apart.
img2dataset's seconds are its `download(...)` call (its Spark session made before, as the peer
tool does); ours are the stage's seconds from its manifest (session start included).

    .venv/bin/python tests/benchmarks/bench_download.py --n 3000 [--plain] [--rounds 3]
        [--old-tree DIR]   # a checkout of the previous engine (e.g. git worktree of 58524fa)
"""

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(SHARED / "tools"))
import peer_img2dataset as peer  # noqa: E402 - the shared tool's server and certificate

IMG2DATASET = r"""
import json, os, sys, time
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
os.environ["PYSPARK_PYTHON"] = sys.executable
from pyspark.sql import SparkSession
from img2dataset import download
urls, out, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false").getOrCreate()
t = time.time()
download(url_list=urls, input_format="parquet", url_col="url", caption_col="caption",
         output_format="webdataset", output_folder=out, processes_count=2, thread_count=threads,
         image_size=256, resize_mode="keep_ratio", resize_only_if_bigger=True,
         number_sample_per_shard=1000, distributor="pyspark", timeout=10, retries=0)
print(json.dumps({"seconds": time.time() - t}))
"""


def _proc_stats() -> dict:
    """pid -> (parent pid, CPU seconds so far), from /proc."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks = int(fields[11]) + int(fields[12])  # utime + stime
            found[int(entry)] = (int(fields[1]), ticks / os.sysconf("SC_CLK_TCK"))
    return found


def tree_cpu(command, **kwargs):
    """Run `command`; (its CompletedProcess-like stdout, CPU seconds of it and every process
    it started: the JVM and Spark's Python workers included), sampling /proc every 0.2 s."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, **kwargs)
    most: dict = {}
    while process.poll() is None:
        stats = _proc_stats()
        tree = {process.pid}
        for _ in range(8):  # descendants, a few generations deep
            tree |= {pid for pid, (parent, _) in stats.items() if parent in tree}
        for pid in tree & stats.keys():
            most[pid] = max(most.get(pid, 0.0), stats[pid][1])
        time.sleep(0.2)
    out, err = process.communicate()
    if process.returncode:
        raise RuntimeError(err[-2000:])
    return out, sum(most.values())


def run_img2dataset(urls, work, threads):
    out = tempfile.mkdtemp(dir=work)
    stdout, cpu = tree_cpu([sys.executable, "-c", IMG2DATASET, urls, out, str(threads)])
    seconds = json.loads(stdout.strip().splitlines()[-1])["seconds"]
    ok = sum(json.load(open(p))["successes"] for p in glob.glob(f"{out}/*_stats.json"))
    return {"seconds": seconds, "ok": ok, "cpu": cpu}


def run_ours(urls, work, tree=None, threads=None):
    out = tempfile.mkdtemp(dir=work)
    env = dict(os.environ)
    if tree:  # an older checkout, imported before the installed package (workers inherit it;
        # `-c` puts the working folder first on the path, so that is the checkout too)
        env["PYTHONPATH"] = str(tree)
    _, cpu = tree_cpu([sys.executable, "-c", "from wit_builder.cli import main; main()",
                    "download", "--input", urls, "--out", out, "--master", "local[2]",
                    "--set", "download.allow_networks=127.0.0.0/24",
                    "--set", "download.processes=2", "--set", "download.samples_per_shard=1000",
                    "--set", "download.image_size=256",
                    *(["--set", f"download.threads={threads}"] if threads else [])],
                      env=env, cwd=tree or REPO)
    manifest = json.load(open(f"{out}/download/manifest.json"))
    return {"seconds": manifest["seconds"], "ok": manifest["rows_out"], "cpu": cpu}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--plain", action="store_true", help="one plain http host, no latency")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--old-tree", default=None)
    ap.add_argument("--only", default="", help="comma-separated tools to run (default: all)")
    a = ap.parse_args()
    load_before = os.getloadavg()
    hosts, latency, tls = (1, 0, False) if a.plain else (20, 200, True)
    work = tempfile.mkdtemp()
    root = SHARED / "data/images/flickr8k_dev/train"
    names = sorted(f.name for f in root.glob("*.jpg"))
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    certs = tempfile.mkdtemp() if tls else ""
    if tls:
        peer.make_cert(certs, hosts)
    server = subprocess.Popen([sys.executable, "-c", peer.SERVER, str(port), str(root),
                               str(latency), str(hosts), certs])
    tools = {"img2dataset_t32": lambda u: run_img2dataset(u, work, 32),
             "img2dataset_t128": lambda u: run_img2dataset(u, work, 128),
             "ours": lambda u: run_ours(u, work, threads=32 if a.plain else None)}
    if a.old_tree:
        tools["ours_previous_engine"] = lambda u: run_ours(
            u, work, a.old_tree, threads=32 if a.plain else 128)
    if a.only:
        tools = {name: run for name, run in tools.items() if name in a.only.split(",")}
    try:
        time.sleep(1.5)
        import pandas as pd
        scheme = "https" if tls else "http"
        urls = [f"{scheme}://127.0.0.{1 + i % hosts}:{port}/{names[i % len(names)]}?i={i}"
                for i in range(a.n)]
        url_file = f"{work}/urls.parquet"
        pd.DataFrame({"url": urls, "caption": [f"photo {i}" for i in range(a.n)]}).to_parquet(url_file)
        runs = {name: [] for name in tools}
        for r in range(a.rounds):
            order = list(tools) if r % 2 == 0 else list(reversed(tools))
            for name in order:
                runs[name].append(tools[name](url_file))
                print(json.dumps({"round": r, "tool": name, **runs[name][-1]}), flush=True)
    finally:
        server.terminate()
    rate = {name: [x["ok"] / x["seconds"] for x in xs] for name, xs in runs.items()}
    peers = [name for name in ("img2dataset_t32", "img2dataset_t128") if name in rate]
    best_peer = max(peers, key=lambda name: statistics.median(rate[name]), default=None)
    ratios = [o / p for o, p in zip(rate["ours"], rate[best_peer])] if best_peer else [0]
    print(json.dumps({
        "n": a.n, "mode": "plain loopback, 1 host" if a.plain else
        "20 hosts, TLS, 200 ms lognormal latency, 2% 404",
        "load_average_before_after": [load_before, os.getloadavg()], "rounds": a.rounds,
        "images_per_s_median": {k: round(statistics.median(v), 1) for k, v in rate.items()},
        "cpu_s_per_1000_images_median": {
            k: round(statistics.median(1000 * x["cpu"] / max(1, x["ok"]) for x in xs), 2)
            for k, xs in runs.items()},
        "img2dataset_best": best_peer,
        "ratio_vs_img2dataset_best_per_round": [round(x, 2) for x in ratios],
        "ratio_vs_img2dataset_best_median": round(statistics.median(ratios), 2),
        **({"ratio_vs_previous_engine_median": round(statistics.median(
            o / p for o, p in zip(rate["ours"], rate["ours_previous_engine"])), 2)}
           if a.old_tree else {}),
    }, indent=1))


if __name__ == "__main__":
    main()
