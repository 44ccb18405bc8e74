"""Hugging Face T5 interop: a random ``transformers`` T5 built here (no download), in both
layouts (v1.0: ReLU, tied, pytorch_model.bin; v1.1: gated-GELU, untied, safetensors), is
imported through the CLI; our logits equal its logits, export(import(x)) is x tensor by
tensor, and bad checkpoints are one-line errors that write nothing."""

import io
import json
import os
import shutil

import numpy as np
import pytest
import sentencepiece as spm

from nlpjax import api, cli
from nlpjax.data.spm_tokenizer import SentencePieceTokenizer
from nlpjax.interop import hf_t5

torch = pytest.importorskip("torch", reason="the test extra installs torch")
transformers = pytest.importorskip("transformers", reason="the test extra installs it")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

SENTINELS = 4
LINES = ["A man is riding a horse.", "Ein Mann reitet ein Pferd.", "Two dogs play in snow."]
LAYOUTS = {  # name: (feed_forward_proj, tie_word_embeddings, file format)
    "v1.0": ("relu", True, "bin"),
    "v1.1": ("gated-gelu", False, "safetensors"),
}


@pytest.fixture(scope="module")
def spm_model() -> bytes:
    """A tiny SentencePiece model with T5's ids: pad 0, eos 1, unk 2 and no bos."""
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
        minloglevel=2,
    )
    return buffer.getvalue()


def write_hf_t5(directory, layout: str, spm_model: bytes):
    """A random transformers T5 of ``layout`` saved in ``directory``; returns the model."""
    ff, tied, fmt = LAYOUTS[layout]
    pieces = SentencePieceTokenizer(spm_model, num_registers=0).num_pieces
    vocab = pieces + SENTINELS + 6  # T5 pads its vocabulary past the sentinels
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
    if fmt == "bin":
        directory.mkdir()
        config.save_pretrained(directory)
        torch.save(model.state_dict(), directory / hf_t5.TORCH_FILE)
    else:
        model.save_pretrained(directory)
    (directory / hf_t5.SPM_FILE).write_bytes(spm_model)
    (directory / hf_t5.TOKENIZER_CONFIG_FILE).write_text(json.dumps({"extra_ids": SENTINELS}))
    return model


@pytest.fixture(scope="module", params=list(LAYOUTS))
def imported(request, tmp_path_factory, spm_model):
    root = tmp_path_factory.mktemp(request.param)
    model = write_hf_t5(root / "hf", request.param, spm_model)
    workdir = root / "workdir"
    code = cli.main(
        ["import", "--from=hf-t5", str(root / "hf"), f"--workdir={workdir}"]
        + ["--config.data.prefix=", "--config.data.source_length=16"]
    )
    assert code == 0
    return request.param, model, root, workdir


def hf_logits(model, source, decoder_inputs) -> np.ndarray:
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(source),
            attention_mask=torch.tensor(source != 0),
            decoder_input_ids=torch.tensor(decoder_inputs),
        )
    return out.logits.numpy()


def test_imported_logits_equal_the_transformers_logits(imported):
    layout, model, _, workdir = imported
    trained = api.load(workdir)
    cfg, tokenizer = trained.config.model, trained.tokenizer
    assert cfg.tie_embeddings == (layout == "v1.0")
    assert cfg.feed_forward == LAYOUTS[layout][0]
    rows = hf_t5.VocabLayout(cfg.vocab_size, tokenizer.num_pieces, tokenizer.num_sentinels)
    # HF's <extra_id_0> (right after the pieces' sentinels block) is our sentinel 0.
    hf_extra_0 = tokenizer.num_pieces + SENTINELS - 1
    assert rows.ours_of_hf[hf_extra_0] == tokenizer.sentinel_id(0)
    source = np.array([[5, 6, 7, hf_extra_0, 1, 0, 0], [9, 10, 11, 12, 13, 14, 1]])
    decoder_inputs = np.array([[0, 5, hf_extra_0, 8], [0, 3, 30, 7]])
    ours = trained.task.model.apply(
        {"params": trained.params}, rows.ours_of_hf[source], rows.ours_of_hf[decoder_inputs]
    )
    theirs = hf_logits(model, source, decoder_inputs)[..., rows.hf_of_ours]
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-4, rtol=0)


def test_export_of_the_import_is_the_checkpoint_tensor_by_tensor(imported):
    layout, model, root, workdir = imported
    out = root / "exported"
    assert cli.main(["export", "--to=hf-t5", f"--workdir={workdir}", str(out)]) == 0
    exported = safetensors_numpy.load_file(str(out / hf_t5.SAFETENSORS_FILE))
    original = {k: v.numpy() for k, v in model.state_dict().items()}
    tied_copies = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}
    if layout == "v1.0":
        tied_copies.add("lm_head.weight")
    assert set(exported) == set(original) - tied_copies
    for name, tensor in exported.items():
        np.testing.assert_array_equal(tensor, original[name], err_msg=name)
    assert (out / hf_t5.SPM_FILE).read_bytes() == (root / "hf" / hf_t5.SPM_FILE).read_bytes()
    reread = transformers.T5ForConditionalGeneration.from_pretrained(out).eval()
    source, decoder_inputs = np.array([[5, 6, 7, 1]]), np.array([[0, 5, 6]])
    np.testing.assert_array_equal(
        hf_logits(reread, source, decoder_inputs), hf_logits(model, source, decoder_inputs)
    )


def test_the_t5_sentencepiece_layout_keeps_piece_3_as_text(spm_model):
    tokenizer = SentencePieceTokenizer(spm_model, num_registers=0)
    assert tokenizer.first_text_id == 3 and 3 not in tokenizer.non_text_ids()
    ids = tokenizer.encode("A man is riding a horse.")
    assert tokenizer.decode(ids) == "A man is riding a horse."


def _import_error(hf_dir, workdir, capsys) -> str:
    capsys.readouterr()
    code = cli.main(["import", "--from=hf-t5", str(hf_dir), f"--workdir={workdir}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert not (workdir / "config.json").exists() and not (workdir / "checkpoints").exists()
    return err[0]


@pytest.fixture(scope="module")
def v11_dir(tmp_path_factory, spm_model):
    directory = tmp_path_factory.mktemp("bad") / "hf"
    write_hf_t5(directory, "v1.1", spm_model)
    return directory


def test_missing_tensors_are_listed_and_nothing_is_written(v11_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(v11_dir, broken)
    tensors = safetensors_numpy.load_file(str(broken / hf_t5.SAFETENSORS_FILE))
    gone = ["decoder.final_layer_norm.weight", "encoder.block.1.layer.0.SelfAttention.q.weight"]
    safetensors_numpy.save_file(
        {k: v for k, v in tensors.items() if k not in gone}, str(broken / hf_t5.SAFETENSORS_FILE)
    )
    err = _import_error(broken, tmp_path / "wd", capsys)
    assert "missing tensors: " in err and all(name in err for name in gone)


def test_another_architecture_is_refused(v11_dir, tmp_path, capsys):
    other = tmp_path / "bert"
    shutil.copytree(v11_dir, other)
    config = json.loads((other / "config.json").read_text())
    config.update(model_type="bert", architectures=["BertModel"])
    (other / "config.json").write_text(json.dumps(config))
    err = _import_error(other, tmp_path / "wd", capsys)
    assert "model_type is 'bert' (architectures: BertModel), not a T5" in err
    assert str(other / "config.json") in err
    # T5 names with foreign tensors among them: the foreign ones are listed.
    shutil.copy(v11_dir / "config.json", other / "config.json")
    tensors = safetensors_numpy.load_file(str(other / hf_t5.SAFETENSORS_FILE))
    tensors["bert.pooler.dense.weight"] = np.zeros((2, 2), np.float32)
    safetensors_numpy.save_file(tensors, str(other / hf_t5.SAFETENSORS_FILE))
    err = _import_error(other, tmp_path / "wd", capsys)
    assert "tensors of another architecture: bert.pooler.dense.weight" in err


def test_a_directory_without_spiece_model_or_without_safetensors_names_the_fix(
    v11_dir, tmp_path, capsys, monkeypatch
):
    no_spm = tmp_path / "no_spm"
    shutil.copytree(v11_dir, no_spm)
    os.remove(no_spm / hf_t5.SPM_FILE)
    err = _import_error(no_spm, tmp_path / "wd", capsys)
    assert "spiece.model not found" in err and "copy the checkpoint's spiece.model" in err
    monkeypatch.setitem(__import__("sys").modules, "safetensors.numpy", None)
    err = _import_error(v11_dir, tmp_path / "wd", capsys)
    assert "needs the 'safetensors' package: pip install 'nlpjax[hf]'" in err


def test_bfloat16_safetensors_read_exactly_as_float32(v11_dir, tmp_path):
    from safetensors.torch import save_file

    state = transformers.T5ForConditionalGeneration.from_pretrained(v11_dir).state_dict()
    half = {k: v.to(torch.bfloat16).contiguous() for k, v in state.items() if "embed" not in k}
    directory = tmp_path / "bf16"
    directory.mkdir()
    save_file(half, str(directory / hf_t5.SAFETENSORS_FILE))
    tensors = hf_t5.read_hf_tensors(directory)
    assert set(tensors) == set(half)
    for name, tensor in tensors.items():
        assert tensor.dtype == np.float32
        np.testing.assert_array_equal(tensor, half[name].float().numpy(), err_msg=name)


def test_overriding_the_checkpoints_shape_is_refused(v11_dir, tmp_path, capsys):
    workdir = tmp_path / "wd"
    code = cli.main(
        ["import", "--from=hf-t5", str(v11_dir), f"--workdir={workdir}", "--config.model.d_ff=64"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert f"--config.model.d_ff: the model's shape comes from {v11_dir} (d_ff=32)" in err[0]
    assert not (workdir / "config.json").exists()
