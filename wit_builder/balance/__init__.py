"""balance: at most t pairs per query entry (CLIP/MetaCLIP balancing)."""
