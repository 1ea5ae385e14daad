"""The demo: every stage on a small generated corpus, offline, images served on 127.0.0.1."""
