"""Safe image download into img2dataset WebDataset shards (stage.py, engine.py, fetch.py, safety.py)."""
