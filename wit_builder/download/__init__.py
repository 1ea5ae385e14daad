"""Safe image download into img2dataset WebDataset shards (stage, engine, fetch, safety)."""
