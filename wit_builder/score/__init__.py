"""The score stage: CLIP scores for a shard set, and the CLIP-score filter (stage.py, model.py)."""
