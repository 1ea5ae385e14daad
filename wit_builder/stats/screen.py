"""The screen stage's part of the report: per hash list its count (never a hash or an image),
the NSFW score histogram and count above the threshold, the faces found and blurred. Sample
cards never show an image scored above the threshold (samples.hide_nsfw)."""

from __future__ import annotations

from wit_builder.stats import plots


def facts(sc: dict) -> list[tuple[str, str]]:
    """The screen stage's lines: per hash list its count (never a hash), NSFW scores, faces."""
    nsfw, faces = sc.get("nsfw") or {}, sc.get("faces") or {}
    listed = sc.get("blocklisted") or {}
    lines = [("hash lists", ", ".join(f"{name}: {n:,} removed" for name, n in listed.items())
              or "no sample listed")]
    if nsfw.get("scored") is not None:
        dropped = (f"; dropped when > {nsfw['drop_above']}" if nsfw.get("drop_above", 1) < 1
                   else "")
        lines.append(("NSFW score", f"{nsfw['scored']:,} scored ({nsfw.get('model', '')}); "
                                    f"{nsfw.get('above_threshold', 0):,} above {nsfw['threshold']} "
                                    f"(their images are never shown){dropped}"))
    if faces:
        lines.append(("faces", f"{faces.get('found', 0):,} found in "
                               f"{faces.get('samples_with_faces', 0):,} samples; "
                               + (f"{faces.get('blurred_samples', 0):,} images blurred"
                                  if faces.get("blur") else "not blurred")))
    return lines


def histogram(sc: dict) -> str | None:
    return plots.plot_nsfw_scores(sc.get("nsfw"))
