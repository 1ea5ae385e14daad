"""A compact CLIP (model.py, train.py) that trains on the built shards and evaluates zero-shot
classification and retrieval (evaluate.py). Installed with the `train` extra."""
