"""filter: language, caption and URL rules, decontamination and dedup, each drop counted."""
