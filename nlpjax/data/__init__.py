"""Data: raw corpora, TFDS builders, tokenizers and grain pipelines."""
