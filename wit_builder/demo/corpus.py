"""The demo's corpus, generated on the spot: shape pictures, the web pages that show them, a WARC.

Everything is drawn from fixed seeds, so two runs give the same files (only the server's address,
known at run time, goes into the page URLs). The corpus is small on purpose but holds one case of
every kind of row the stages must drop, so each drop reason shows up in the manifests:

- extract: a `data:` and a `javascript:` image, an empty alt;
- match: alt texts that name no query entry;
- filter: captions in German and French, a file name, placeholders (`logo`, `icon`), a one-word
  caption, an `.svg` URL, the same image and caption on two pages;
- download: a 404, a file that is not an image, a truncated JPEG, an `X-Robots-Tag: noai`
  opt-out, a redirect to the cloud metadata address (refused by the network rules);
- finalize: re-compressed copies of pictures (near duplicates), a copy of an evaluation picture,
  a picture too small and one too wide.
"""

from __future__ import annotations

import io
import random
import re
from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star")
COLOURS = {"red": (215, 40, 40), "green": (40, 165, 60), "blue": (45, 85, 215),
           "yellow": (240, 205, 40), "purple": (135, 60, 175), "orange": (245, 135, 30)}
BACKGROUNDS = {"white": (245, 245, 245), "black": (20, 20, 20), "gray": (128, 128, 128)}
SIDE = 96  # pixels; the demo's download resizes to 64, the `tiny` model's input
TRAIN_PER_CLASS = 14  # pictures per (shape, colour) on the pages
EVAL_PER_CLASS = 2  # held-out pictures per (shape, colour) for eval
PER_PAGE = 12

# Caption templates, picked so that lid.176 says English with probability >= 0.5 for every
# filling (it is unsure of short lists of nouns like "small red circle": those fail the language
# filter, as such alt texts do on the real web).
CAPTIONS = ("a {colour} {shape} on a {background} background.",
            "A {size} {colour} {shape} in the picture",
            "this is a {size} {colour} {shape} on a {background} background",
            "Clip art of a {colour} {shape} with a {background} background",
            "a {colour} {shape} against a {background} backdrop",
            "the {shape} is {colour} and the background is {background}",
            "There is a {colour} {shape} here")


@dataclass(frozen=True)
class Picture:
    key: str
    shape: str
    colour: str
    background: str
    size: str  # "small" | "large"
    image: Image.Image

    def caption(self, variant: int) -> str:
        text = CAPTIONS[variant % len(CAPTIONS)].format(
            colour=self.colour, shape=self.shape, background=self.background, size=self.size)
        return re.sub(r"\b([Aa]) orange", r"\1n orange", text)


def _jitter(rgb, rng: random.Random, amount: int) -> tuple:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in rgb)


def _polygon(shape: str, cx: float, cy: float, r: float, turn: float) -> list[tuple]:
    corners = {"triangle": 3, "square": 4, "star": 10}[shape]
    points = []
    for i in range(corners):
        radius = r * (0.45 if shape == "star" and i % 2 else 1.0)
        angle = turn + 2 * np.pi * i / corners
        points.append((cx + radius * np.cos(angle), cy + radius * np.sin(angle)))
    return points


def draw(shape: str, colour: str, background: str, seed: int) -> tuple[Image.Image, str]:
    """One picture: the shape at a random place, size and turn, colours jittered, sensor noise."""
    rng = random.Random(seed)
    image = Image.new("RGB", (SIDE, SIDE), _jitter(BACKGROUNDS[background], rng, 10))
    pen = ImageDraw.Draw(image)
    r = rng.uniform(14, 34)
    cx, cy = rng.uniform(r, SIDE - r), rng.uniform(r, SIDE - r)
    fill = _jitter(COLOURS[colour], rng, 20)
    if shape == "circle":
        pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        pen.polygon(_polygon(shape, cx, cy, r * (0.8 if shape == "square" else 1.0) * 1.25,
                             rng.uniform(0, 2 * np.pi)), fill=fill)
    noise = np.random.default_rng(seed).normal(0, 6, (SIDE, SIDE, 3))
    pixels = np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels), "small" if r < 24 else "large"


def pictures(split: str, per_class: int) -> list[Picture]:
    """Every (shape, colour) `per_class` times, backgrounds in turn; `split` seeds them apart."""
    out = []
    salt = {"train": 0, "eval": 1_000_000}[split]
    for s, shape in enumerate(SHAPES):
        for c, colour in enumerate(COLOURS):
            for i in range(per_class):
                background = list(BACKGROUNDS)[(i + s + c) % len(BACKGROUNDS)]
                seed = salt + (s * 100 + c) * 1000 + i
                image, size = draw(shape, colour, background, seed)
                out.append(Picture(f"{split}-{shape}-{colour}-{i:02d}", shape, colour, background,
                                   size, image))
    return out


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    if not path.exists() or path.read_bytes() != data:  # unchanged files keep their stamps
        path.write_bytes(data)


# --- the site the image server serves --------------------------------------------------------

@dataclass(frozen=True)
class Img:
    src: str  # as written in the page (absolute path, relative path, data: or javascript: URL)
    alt: str
    title: str = ""


def _noise_images(train: list[Picture], eval_pictures: list[Picture], img: Path) -> list[Img]:
    """The rows each later stage must drop (see the module docstring); writes their files.

    The captions of the rows meant for download and finalize say "tiny": that query entry is rarer
    than the balance stage's t, so the balance stage keeps them all.
    """
    _write(img / "not-an-image.jpg", "<html><body>this is a page, not a picture</body></html>")
    _write(img / "truncated.jpg", jpeg(train[1].image)[:700])
    _write(img / "noai" / "opt-out.jpg", jpeg(train[2].image))  # served with X-Robots-Tag: noai
    _write(img / "shapes.svg", '<svg xmlns="http://www.w3.org/2000/svg"/>')
    _write(img / "tiny-dot.jpg", jpeg(train[3].image.resize((16, 16))))
    _write(img / "banner.jpg", jpeg(Image.new("RGB", (384, 48), COLOURS["green"])))
    lookalike = eval_pictures[0]
    _write(img / "lookalike.jpg", jpeg(lookalike.image, quality=75))
    rows = [
        Img("data:image/png;base64,iVBORw0KGgo=", "a red dot"),
        Img("javascript:void(0)", "a blue square button"),
        Img(f"/img/{train[4].key}.jpg", ""),
        Img(f"/img/{train[5].key}.jpg", "click here to subscribe to our newsletter"),
        Img(f"/img/{train[6].key}.jpg", "home"),
        Img(f"/img/{train[7].key}.jpg", "Ein Stern in orange auf blauem Hintergrund"),
        Img(f"/img/{train[8].key}.jpg", "Un grand carré orange sur un fond noir"),
        Img(f"/img/{train[9].key}.jpg", "IMG_2041_blue_square.JPG"),
        Img("/img/logo.jpg", "logo"),
        Img("/img/icon.jpg", "icon"),
        Img(f"/img/{train[10].key}.jpg", "red"),
        Img("/img/shapes.svg", "There is a purple star icon here, drawn in svg"),
        Img("/img/missing.jpg", "this is a tiny green triangle on a white background"),
        Img("/img/not-an-image.jpg", "this is a tiny blue circle on a black background"),
        Img("/img/truncated.jpg", "this is a tiny red square on a gray background"),
        Img("/img/noai/opt-out.jpg", "There is a tiny yellow star on a black background"),
        Img("/redirect/metadata.jpg", "this is a tiny orange circle on a gray background"),
        Img("/img/tiny-dot.jpg", "this is a tiny red dot on a white background"),
        Img("/img/banner.jpg", "this is a long green banner with blue squares"),
        Img("/img/lookalike.jpg", f"There is a tiny {lookalike.colour} {lookalike.shape} here"),
    ]
    for p in train[:: len(train) // 3][:3]:  # two smaller, re-compressed copies of a picture
        for side, quality in ((80, 60), (72, 50)):
            name = f"copy{side}-{p.key}.jpg"
            _write(img / name, jpeg(p.image.resize((side, side)), quality=quality))
            rows.append(Img(f"/img/{name}",
                            f"this is a tiny {p.colour} {p.shape} on a {p.background} background"))
    return rows


def _page(n: int, images: list[Img]) -> str:
    tags = "\n".join(
        f'  <img src="{escape(i.src)}" alt="{escape(i.alt)}"'
        + (f' title="{escape(i.title)}"' if i.title else "") + ">"
        for i in images)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>Shapes, page {n}</title></head>\n<body>\n<h1>Shapes, page {n}</h1>\n"
            f"{tags}\n</body></html>\n")


def write_site(root: Path) -> list[str]:
    """Images under root/site/img, pages under root/site/pages, held-out pictures under root/eval.

    Returns the page paths, relative to root/site.
    """
    site, img = root / "site", root / "site" / "img"
    train = pictures("train", TRAIN_PER_CLASS)
    held_out = pictures("eval", EVAL_PER_CLASS)
    for p in train:
        _write(img / f"{p.key}.jpg", jpeg(p.image))
    write_eval(root / "eval", held_out)

    rng = random.Random(7)
    order = list(range(len(train)))
    rng.shuffle(order)
    tags = []
    for n, i in enumerate(order):
        p = train[i]
        # some pages link with a relative URL, as real pages do; the extract stage resolves it
        src = f"../img/{p.key}.jpg" if n % 3 == 0 else f"/img/{p.key}.jpg"
        tags.append(Img(src, p.caption(n), f"{p.colour} {p.shape}" if n % 20 == 0 else ""))
    tags += [Img(t.src, t.alt) for t in tags[: 8]]  # the same image and caption on a second page
    noise = _noise_images(train, held_out, img)
    for j, t in enumerate(noise):  # spread the noise over the pages
        tags.insert((j * 37) % len(tags), t)
    pages = []
    for n in range(0, len(tags), PER_PAGE):
        name = f"pages/shapes-{n // PER_PAGE:03d}.html"
        _write(site / name, _page(n // PER_PAGE, tags[n: n + PER_PAGE]))
        pages.append(name)
    _write(site / "style.css", "body { font-family: sans-serif }\n")
    return pages


def write_eval(folder: Path, held_out: list[Picture]) -> None:
    """Held-out pictures with `colour_labels.tsv`, `shape_labels.tsv` and `captions.tsv` (two each)."""
    colours, shapes, captions = ["path\tlabel"], ["path\tlabel"], ["path\tcaption"]
    for p in held_out:
        path = f"images/{p.key}.jpg"
        _write(folder / path, jpeg(p.image))
        colours.append(f"{path}\t{p.colour}")
        shapes.append(f"{path}\t{p.shape}")
        captions += [f"{path}\t{p.caption(v)}" for v in (0, 1)]
    for name, rows in (("colour_labels.tsv", colours), ("shape_labels.tsv", shapes),
                       ("captions.tsv", captions)):
        _write(folder / name, "\n".join(rows) + "\n")


# --- the crawl: a WARC of the pages, as a crawler would have saved them -----------------------

def write_warc(path: Path, site: Path, base_url: str, pages: list[str]) -> None:
    """One request + response record per page, plus a stylesheet (a record with no images).

    Record ids and dates are fixed, so the same pages at the same address give the same bytes
    and a rerun of the demo finds the extract stage up to date.
    """
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=True)
    for n, name in enumerate(pages + ["style.css"]):
        url = f"{base_url}/{name}"
        body = (site / name).read_bytes()
        kind = "text/css" if name.endswith(".css") else "text/html; charset=utf-8"
        fixed = {"WARC-Date": "2024-01-01T00:00:00Z"}
        request = writer.create_warc_record(
            url, "request", payload=io.BytesIO(b""),
            http_headers=StatusAndHeaders(f"GET /{name} HTTP/1.1", [("Host", base_url.split("//")[1])],
                                          is_http_request=True),
            warc_headers_dict={**fixed, "WARC-Record-ID": f"<urn:uuid:00000000-0000-0000-0000-{2 * n:012d}>"})
        response = writer.create_warc_record(
            url, "response", payload=io.BytesIO(body),
            http_headers=StatusAndHeaders("200 OK", [("Content-Type", kind),
                                                     ("Content-Length", str(len(body)))],
                                          protocol="HTTP/1.1"),
            warc_headers_dict={**fixed, "WARC-Record-ID": f"<urn:uuid:00000000-0000-0000-0000-{2 * n + 1:012d}>"})
        writer.write_record(request)
        writer.write_record(response)
    _write(path, buf.getvalue())
