"""Safe image download into img2dataset WebDataset shards (stage, engine, fetch, safety)."""

import os

# img2dataset imports albumentations, which otherwise asks PyPI for a newer version on import
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
