"""Finalize: image hashing, near-duplicate removal, exact balance, resharding."""
