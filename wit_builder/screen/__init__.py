"""The screen stage: known-bad hash lists, NSFW scores and face blurring (stage.py)."""
