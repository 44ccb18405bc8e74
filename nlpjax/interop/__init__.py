"""Reading and writing checkpoints of other frameworks (Hugging Face T5)."""
