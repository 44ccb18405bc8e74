"""Tiny random Hugging Face T5 checkpoints, and the logits ``transformers`` computes for
them: the fixtures of ``tests/test_hf_interop.py``.

``make test`` does not install torch and transformers (their install alone would take
most of its 10 minutes), so the two layouts are committed under ``tests/data/hf_t5/``
as this module writes them: v1.0 (ReLU, tied embeddings) and v1.1 (gated-GELU, own
``lm_head``), each as ``config.json`` + ``model.safetensors`` + ``spiece.model`` +
``tokenizer_config.json``, with ``reference_logits.npz`` = the logits of
``T5ForConditionalGeneration`` for the (HF-id) ``source`` and ``decoder_inputs`` stored
with them (see ``model_inputs``). Regenerate them with

    .venv/bin/pip install -e '.[bench]'      # torch 2.13.0 CPU and transformers
    .venv/bin/python -m tests.hf_t5_fixtures tests/data/hf_t5

``tests/test_hf_interop_live.py`` (with those packages) checks that a freshly built model
gives the committed logits, and tests the ``pytorch_model.bin`` and bfloat16 paths.
"""

import io
import json
import sys
from pathlib import Path

import numpy as np

SENTINELS = 4
LINES = ["A man is riding a horse.", "Ein Mann reitet ein Pferd.", "Two dogs play in snow."]
LAYOUTS = {  # name: (feed_forward_proj, tie_word_embeddings)
    "v1.0": ("relu", True),
    "v1.1": ("gated-gelu", False),
}
REFERENCE_FILE = "reference_logits.npz"
DATA_DIR = Path(__file__).parent / "data" / "hf_t5"


def model_inputs(hf_extra_0: int) -> tuple[np.ndarray, np.ndarray]:
    """(source, decoder inputs) in HF ids, with padding and HF's ``<extra_id_0>``."""
    source = np.array([[5, 6, 7, hf_extra_0, 1, 0, 0], [9, 10, 11, 12, 13, 14, 1]])
    decoder_inputs = np.array([[0, 5, hf_extra_0, 8], [0, 3, 30, 7]])
    return source, decoder_inputs


def spm_model() -> bytes:
    """A tiny SentencePiece model with T5's ids: pad 0, eos 1, unk 2 and no bos."""
    import sentencepiece as spm

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(LINES * 10),
        model_writer=buffer,
        vocab_size=40,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        normalization_rule_name="identity",  # no 200 KB normaliser table in the file
        minloglevel=2,
    )
    return buffer.getvalue()


def build_model(layout: str, num_pieces: int):
    """A random ``T5ForConditionalGeneration`` of ``layout`` (seeded)."""
    import torch
    import transformers

    ff, tied = LAYOUTS[layout]
    vocab = num_pieces + SENTINELS + 6  # T5 pads its vocabulary past the sentinels
    config = transformers.T5Config(
        vocab_size=vocab,
        d_model=16,
        d_kv=8,
        d_ff=32,
        num_layers=2,
        num_decoder_layers=1,
        num_heads=2,
        feed_forward_proj=ff,
        tie_word_embeddings=tied,
        dropout_rate=0.0,
    )
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(config).eval()
    if not tied:  # transformers 5 ties by default; a v1.1 checkpoint has its own lm_head
        model.lm_head.weight = torch.nn.Parameter(torch.randn(vocab, 16))
    return model


def hf_logits(model, source: np.ndarray, decoder_inputs: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(source),
            attention_mask=torch.tensor(source != 0),
            decoder_input_ids=torch.tensor(decoder_inputs),
        )
    return out.logits.numpy()


def write_checkpoint(directory: Path, model, spm: bytes, fmt: str = "safetensors") -> None:
    """``model`` as a Hugging Face directory: safetensors (``save_pretrained``) or the
    older ``pytorch_model.bin``, plus T5's tokenizer files."""
    import torch

    from nlpjax.interop import hf_t5

    directory.mkdir(parents=True, exist_ok=True)
    if fmt == "bin":
        model.config.save_pretrained(directory)
        torch.save(model.state_dict(), directory / hf_t5.TORCH_FILE)
    else:
        model.save_pretrained(directory)
    (directory / hf_t5.SPM_FILE).write_bytes(spm)
    (directory / hf_t5.TOKENIZER_CONFIG_FILE).write_text(json.dumps({"extra_ids": SENTINELS}))


def make_fixtures(root: Path) -> dict[str, np.ndarray]:
    """Writes both layouts under ``root/<layout>`` and ``root/reference_logits.npz``."""
    from nlpjax.data.spm_tokenizer import SentencePieceTokenizer

    spm = spm_model()
    pieces = SentencePieceTokenizer(spm, num_registers=0).num_pieces
    source, decoder_inputs = model_inputs(pieces + SENTINELS - 1)  # HF's <extra_id_0>
    arrays = {"source": source, "decoder_inputs": decoder_inputs}
    for layout in LAYOUTS:
        model = build_model(layout, pieces)
        write_checkpoint(root / layout, model, spm)
        arrays[layout] = hf_logits(model, source, decoder_inputs)
    np.savez(root / REFERENCE_FILE, **arrays)
    return arrays


if __name__ == "__main__":
    make_fixtures(Path(sys.argv[1]) if len(sys.argv) > 1 else DATA_DIR)
