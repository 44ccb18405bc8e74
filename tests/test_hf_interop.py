"""Hugging Face T5 interop against committed checkpoints: tiny random ``transformers``
T5s in both layouts (v1.0: ReLU, tied; v1.1: gated-GELU, own lm_head), written with the
logits ``transformers`` computed for them by ``tests/hf_t5_fixtures.py`` (a real run of
transformers 5.24.0 / torch 2.13.0, see that module; ``tests/test_hf_interop_live.py``
checks a fresh build against them). Imported through the CLI, our logits equal those
logits, export(import(x)) is x tensor by tensor, and bad checkpoints are one-line errors
that write nothing. Needs only ``safetensors`` (the test extra), not torch."""

import json
import os
import shutil

import numpy as np
import pytest

from nlpjax import api, cli
from nlpjax.data.spm_tokenizer import SentencePieceTokenizer
from nlpjax.interop import hf_t5
from tests.hf_t5_fixtures import DATA_DIR, LAYOUTS, REFERENCE_FILE, SENTINELS

safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="the test extra has it")


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    return dict(np.load(DATA_DIR / REFERENCE_FILE))


@pytest.fixture(scope="module")
def spm_model() -> bytes:
    return (DATA_DIR / "v1.1" / hf_t5.SPM_FILE).read_bytes()


@pytest.fixture(scope="module", params=list(LAYOUTS))
def imported(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    workdir = root / "workdir"
    code = cli.main(
        ["import", "--from=hf-t5", str(DATA_DIR / request.param), f"--workdir={workdir}"]
        + ["--config.data.prefix=", "--config.data.source_length=16"]
    )
    assert code == 0
    return request.param, root, workdir


def test_imported_logits_equal_the_transformers_logits(imported, reference):
    layout, _, workdir = imported
    trained = api.load(workdir)
    cfg, tokenizer = trained.config.model, trained.tokenizer
    assert cfg.tie_embeddings == (layout == "v1.0")
    assert cfg.feed_forward == LAYOUTS[layout][0]
    rows = hf_t5.VocabLayout(cfg.vocab_size, tokenizer.num_pieces, tokenizer.num_sentinels)
    # HF's <extra_id_0> (right after the pieces' sentinels block) is our sentinel 0.
    hf_extra_0 = tokenizer.num_pieces + SENTINELS - 1
    assert rows.ours_of_hf[hf_extra_0] == tokenizer.sentinel_id(0)
    source, decoder_inputs = reference["source"], reference["decoder_inputs"]
    assert hf_extra_0 in source
    ours = trained.task.model.apply(
        {"params": trained.params}, rows.ours_of_hf[source], rows.ours_of_hf[decoder_inputs]
    )
    theirs = reference[layout][..., rows.hf_of_ours]
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-4, rtol=0)


def test_export_of_the_import_is_the_checkpoint_tensor_by_tensor(imported):
    layout, root, workdir = imported
    out = root / "exported"
    assert cli.main(["export", "--to=hf-t5", f"--workdir={workdir}", str(out)]) == 0
    exported = safetensors_numpy.load_file(str(out / hf_t5.SAFETENSORS_FILE))
    original = safetensors_numpy.load_file(str(DATA_DIR / layout / hf_t5.SAFETENSORS_FILE))
    assert set(exported) == set(original)
    for name, tensor in exported.items():
        np.testing.assert_array_equal(tensor, original[name], err_msg=name)
    assert (out / hf_t5.SPM_FILE).read_bytes() == (DATA_DIR / layout / hf_t5.SPM_FILE).read_bytes()
    config = json.loads((out / "config.json").read_text())
    original_config = json.loads((DATA_DIR / layout / "config.json").read_text())
    for key in ("d_model", "d_ff", "num_layers", "num_heads", "vocab_size", "feed_forward_proj"):
        assert config[key] == original_config[key], key


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
def v11_dir() -> "os.PathLike":
    return DATA_DIR / "v1.1"


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


def test_overriding_the_checkpoints_shape_is_refused(v11_dir, tmp_path, capsys):
    workdir = tmp_path / "wd"
    code = cli.main(
        ["import", "--from=hf-t5", str(v11_dir), f"--workdir={workdir}", "--config.model.d_ff=64"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert f"--config.model.d_ff: the model's shape comes from {v11_dir} (d_ff=32)" in err[0]
    assert not (workdir / "config.json").exists()
