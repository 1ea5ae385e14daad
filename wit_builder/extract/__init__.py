"""extract: (image URL, alt text) candidates from WARC, WAT, HTML and tabular inputs."""
