"""Statistics of stage outputs and shards: numbers (collect.py) and reports (report.py)."""
