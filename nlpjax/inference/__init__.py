"""Inference: KV caches and decoding (greedy, temperature, top-k, top-p)."""
