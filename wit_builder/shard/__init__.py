"""WebDataset shards as files: the tar reader and writer (`tars`), and a sample's image,
metadata and Parquet row with the files beside the tars (`samples`)."""
