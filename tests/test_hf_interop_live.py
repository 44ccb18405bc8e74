"""Hugging Face T5 interop against live ``transformers`` (torch and transformers: the
bench extra, so ``make test-all`` after ``pip install -e '.[test,bench]'``): a fresh
build gives the committed reference logits of ``tests/test_hf_interop.py``, a
``pytorch_model.bin`` checkpoint imports to the same logits, an export loads back into
``T5ForConditionalGeneration`` with identical logits, and bfloat16 tensors widen exactly.
"""

import numpy as np
import pytest

from nlpjax import api, cli
from nlpjax.data.spm_tokenizer import SentencePieceTokenizer
from nlpjax.interop import hf_t5
from tests import hf_t5_fixtures as fx

torch = pytest.importorskip("torch", reason="the bench extra installs torch")
transformers = pytest.importorskip("transformers", reason="the bench extra installs it")

pytestmark = pytest.mark.slow  # builds models with torch; make test uses the fixtures


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    return dict(np.load(fx.DATA_DIR / fx.REFERENCE_FILE))


@pytest.fixture(scope="module")
def spm() -> bytes:
    return (fx.DATA_DIR / "v1.1" / hf_t5.SPM_FILE).read_bytes()


def fresh_model(layout: str, spm: bytes):
    pieces = SentencePieceTokenizer(spm, num_registers=0).num_pieces
    return fx.build_model(layout, pieces)


@pytest.mark.parametrize("layout", list(fx.LAYOUTS))
def test_a_fresh_build_gives_the_committed_reference_logits(layout, spm, reference):
    model = fresh_model(layout, spm)
    logits = fx.hf_logits(model, reference["source"], reference["decoder_inputs"])
    np.testing.assert_allclose(logits, reference[layout], atol=1e-6, rtol=0)


@pytest.mark.parametrize("layout", list(fx.LAYOUTS))
def test_a_pytorch_bin_checkpoint_imports_and_exports_round_trip(layout, spm, reference, tmp_path):
    model = fresh_model(layout, spm)
    fx.write_checkpoint(tmp_path / "hf", model, spm, fmt="bin")
    workdir = tmp_path / "workdir"
    code = cli.main(
        ["import", "--from=hf-t5", str(tmp_path / "hf"), f"--workdir={workdir}"]
        + ["--config.data.prefix=", "--config.data.source_length=16"]
    )
    assert code == 0
    trained = api.load(workdir)
    tokenizer, cfg = trained.tokenizer, trained.config.model
    rows = hf_t5.VocabLayout(cfg.vocab_size, tokenizer.num_pieces, tokenizer.num_sentinels)
    source, decoder_inputs = reference["source"], reference["decoder_inputs"]
    ours = trained.task.model.apply(
        {"params": trained.params}, rows.ours_of_hf[source], rows.ours_of_hf[decoder_inputs]
    )
    np.testing.assert_allclose(
        np.asarray(ours), reference[layout][..., rows.hf_of_ours], atol=1e-4, rtol=0
    )
    out = tmp_path / "exported"
    assert cli.main(["export", "--to=hf-t5", f"--workdir={workdir}", str(out)]) == 0
    reread = transformers.T5ForConditionalGeneration.from_pretrained(out).eval()
    np.testing.assert_array_equal(
        fx.hf_logits(reread, source, decoder_inputs), fx.hf_logits(model, source, decoder_inputs)
    )


def test_bfloat16_safetensors_read_exactly_as_float32(tmp_path):
    from safetensors.torch import save_file

    state = transformers.T5ForConditionalGeneration.from_pretrained(
        fx.DATA_DIR / "v1.1"
    ).state_dict()
    half = {k: v.to(torch.bfloat16).contiguous() for k, v in state.items() if "embed" not in k}
    directory = tmp_path / "bf16"
    directory.mkdir()
    save_file(half, str(directory / hf_t5.SAFETENSORS_FILE))
    tensors = hf_t5.read_hf_tensors(directory)
    assert set(tensors) == set(half)
    for name, tensor in tensors.items():
        assert tensor.dtype == np.float32
        np.testing.assert_array_equal(tensor, half[name].float().numpy(), err_msg=name)
