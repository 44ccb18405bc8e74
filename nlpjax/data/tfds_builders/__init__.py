"""TFDS dataset builders for local or downloaded raw corpora (array_record, no TensorFlow)."""
