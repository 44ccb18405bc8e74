"""Streaming past the context (``nlpjax.inference.stream_cache``, issue 14): the cache modes
against running the model from scratch, one compilation, and the CLI's bad input."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nlpjax
from nlpjax import cli
from nlpjax.errors import ConfigError
from nlpjax.inference import stream_cache
from nlpjax.inference.decode import SamplingConfig
from nlpjax.inference.stream_cache import StreamConfig, resolve, stepper, stream_nll
from nlpjax.models.decoder import Decoder, DecoderConfig
from tests.conftest import REPO

STREAM_TINY = str(REPO / "experiments" / "shakespeare_stream.py") + ":tiny"
CONTEXT = 12
VOCAB = 13


def _model(num_layers=2, sink_token=False, positions="rope"):
    cfg = DecoderConfig(
        vocab_size=VOCAB,
        num_layers=num_layers,
        num_heads=2,
        d_model=16,
        max_len=CONTEXT,
        positions=positions,
        sink_token=sink_token,
    )
    model = Decoder(cfg)
    params = model.init(jax.random.PRNGKey(1), jnp.zeros((1, CONTEXT), jnp.int32))["params"]
    return model, params


@pytest.fixture(scope="module")
def two_layers():
    return _model(2)


@pytest.fixture(scope="module")
def one_layer():
    return _model(1)


@pytest.fixture(scope="module")
def tokens():
    return np.random.RandomState(0).randint(0, VOCAB, size=40).astype(np.int32)


def _step_logits(model, params, cache: StreamConfig, tokens_N) -> np.ndarray:
    """(N, V) logits after feeding each token, one jitted step at a time."""
    token_stepper = stepper(model, resolve(cache, model.config))
    step = jax.jit(token_stepper.step)
    params = stream_cache.on_device(params)
    state = stream_cache.on_device(token_stepper.init(params, 1))
    out = []
    for token in tokens_N:
        logits_1V, state = step(params, state, jnp.asarray([token]))
        out.append(np.asarray(logits_1V[0]))
    return np.stack(out)


_APPLY = {}  # one jitted forward per model


def _from_scratch(model, params, tokens_L) -> np.ndarray:
    """The model's last-position logits on ``tokens_L`` (a fresh run, no cache)."""
    if id(model) not in _APPLY:
        _APPLY[id(model)] = jax.jit(lambda p, t: model.apply({"params": p}, t)[0, -1])
    return np.asarray(_APPLY[id(model)](params, jnp.asarray(tokens_L)[None]))


# Both cases run with make test-all (make test's 10-minute budget); n_sink=0 against
# window and the one-layer eviction tests cover the cache path in make test.
@pytest.mark.slow
@pytest.mark.parametrize("sink_token", [False, True])
def test_sink_window_equals_dense_until_the_first_eviction(sink_token, tokens):
    model, params = _model(2, sink_token=sink_token)
    n_sink, window = 3, 7  # 10 tokens fit; a learned sink token sits in front of them
    seen = n_sink + window
    cache = StreamConfig("sink_window", n_sink, window)
    sinks = _step_logits(model, params, cache, tokens[: seen + 2])
    dense = _step_logits(model, params, StreamConfig("dense", capacity=CONTEXT), tokens[:seen])
    np.testing.assert_allclose(sinks[:seen], dense, atol=1e-5)
    full = jax.jit(lambda p, t: model.apply({"params": p}, t))(params, tokens[None, :seen])
    np.testing.assert_allclose(dense, np.asarray(full[0]), atol=1e-5)  # dense is the model
    evicted = _from_scratch(model, params, tokens[: seen + 2])  # one token evicted since
    assert np.abs(sinks[seen + 1] - evicted).max() > 1e-3


def test_no_sinks_is_the_window_mode_past_many_evictions(two_layers, tokens):
    model, params = two_layers
    no_sinks = _step_logits(model, params, StreamConfig("sink_window", 0, 5), tokens)
    window = _step_logits(model, params, StreamConfig("window", window=5), tokens)
    np.testing.assert_array_equal(no_sinks, window)


def test_one_layer_caches_equal_the_model_on_what_they_keep(one_layer, tokens):
    """With one layer a cached key depends on its token alone, so after any number of
    evictions the cache must equal a fresh run on exactly the tokens it keeps, at
    positions 0.. in order: this checks the ring slots and the re-rotated keys."""
    model, params = one_layer
    n_sink, window = 2, 5
    sinks = _step_logits(model, params, StreamConfig("sink_window", n_sink, window), tokens)
    plain = _step_logits(model, params, StreamConfig("window", window=window), tokens)
    for i in range(n_sink + window, tokens.size):  # past the first eviction
        kept = np.concatenate([tokens[:n_sink], tokens[i - window + 1 : i + 1]])
        np.testing.assert_allclose(sinks[i], _from_scratch(model, params, kept), atol=1e-5)
        recent = tokens[i - window + 1 : i + 1]
        np.testing.assert_allclose(plain[i], _from_scratch(model, params, recent), atol=1e-5)


def test_recompute_is_the_model_on_the_last_window_tokens(two_layers, tokens):
    model, params = two_layers
    window = 6
    recompute = _step_logits(model, params, StreamConfig("recompute", window=window), tokens)
    for i in range(tokens.size):
        last = tokens[max(0, i - window + 1) : i + 1]
        np.testing.assert_allclose(recompute[i], _from_scratch(model, params, last), atol=1e-5)


def _counting(token_stepper):
    """Counts how often ``token_stepper.step`` is traced (Python runs only when tracing)."""
    calls = {"traces": 0}
    step = token_stepper.step

    def counted(*args):
        calls["traces"] += 1
        return step(*args)

    token_stepper.step = counted
    return calls


@pytest.mark.parametrize("mode", ["sink_window", "recompute"])
def test_one_compilation_for_a_whole_stream(two_layers, tokens, mode):
    model, params = two_layers
    cache = StreamConfig(mode, capacity=40 if mode == "dense" else 0)
    token_stepper = stepper(model, resolve(cache, model.config))
    calls = _counting(token_stepper)
    nll = stream_nll(token_stepper, params, tokens, chunk=8)  # 5 chunks, past evictions
    assert nll.shape == (tokens.size - 1,) and np.isfinite(nll).all()
    assert calls["traces"] == 1  # one trace of the scanned step: one compilation
    generator = stream_cache.StreamGenerator(token_stepper, params, SamplingConfig(0.0))
    out = generator.generate(tokens[None, :5], max_new_tokens=30)
    assert out.shape == (1, 30) and calls["traces"] == 2  # the generator's own jit, once


def test_stream_nll_scores_every_next_token(two_layers, tokens):
    model, params = two_layers
    token_stepper = stepper(model, resolve(StreamConfig("recompute"), model.config))
    nll = stream_nll(token_stepper, params, tokens[:CONTEXT], chunk=5)
    logits = model.apply({"params": params}, jnp.asarray(tokens[: CONTEXT - 1])[None])[0]
    want = -jax.nn.log_softmax(logits)[np.arange(CONTEXT - 1), tokens[1:CONTEXT]]
    np.testing.assert_allclose(nll, np.asarray(want), atol=1e-5)


@pytest.mark.parametrize(
    "cache, positions, words",
    [
        (StreamConfig("ring"), "rope", "unknown --cache='ring'; choose one of dense"),
        (StreamConfig("sink_window", n_sink=-1), "rope", "--n_sink=-1 must be >= 0"),
        (StreamConfig("sink_window", 4, 9), "rope", "--n_sink=4 + --window=9 exceeds"),
        (StreamConfig("window", window=13), "rope", "lower --window to at most 12"),
        (StreamConfig("recompute", window=13), "rope", "--window=13 exceeds the model's"),
        (StreamConfig("window", n_sink=2), "rope", "--n_sink applies to --cache=sink_window"),
        (StreamConfig("sink_window"), "learned", "needs model.positions=rope"),
        (StreamConfig("dense", capacity=20), "learned", "--capacity=20 exceeds model.max_len"),
    ],
)
def test_bad_cache_flags_are_config_errors(cache, positions, words):
    model_cfg = DecoderConfig(vocab_size=VOCAB, max_len=CONTEXT, positions=positions)
    with pytest.raises(ConfigError, match=words.replace("+", r"\+").replace("(", r"\(")):
        resolve(cache, model_cfg, "WORKDIR/config.json")


def test_defaults_fill_the_context():
    model_cfg = DecoderConfig(vocab_size=VOCAB, max_len=CONTEXT, positions="rope")
    assert resolve(StreamConfig("sink_window"), model_cfg) == StreamConfig("sink_window", 4, 8)
    assert resolve(StreamConfig("window"), model_cfg).window == CONTEXT
    assert resolve(StreamConfig("dense"), model_cfg).capacity == CONTEXT


def test_dense_past_its_capacity_is_an_error(two_layers, tokens):
    model, params = two_layers
    token_stepper = stepper(model, resolve(StreamConfig("dense", capacity=10), model.config))
    with pytest.raises(ConfigError, match="holds --capacity=10 tokens but .* needs 39"):
        stream_nll(token_stepper, params, tokens)
    generator = stream_cache.StreamGenerator(token_stepper, params, SamplingConfig(0.0))
    with pytest.raises(ConfigError, match="raise --capacity"):
        generator.generate(tokens[None, :8], max_new_tokens=4)  # 8 + 3 fed > 10
    assert generator.generate(tokens[None, :8], max_new_tokens=3).shape == (1, 3)


# -- the CLI on a trained tiny RoPE model ---------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A tiny RoPE decoder (context 16) trained for a few steps."""
    path = tmp_path_factory.mktemp("stream") / "run"
    overrides = {
        "train.progress": False,
        "train.steps": 5,
        "eval.every": 5,
        "checkpoint.every": 5,
    }
    nlpjax.train(nlpjax.load_config(STREAM_TINY, overrides), path)
    return path


def _error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def _saved(workdir: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(workdir.rglob("*")) if p.is_file()}


def test_eval_stream_writes_the_curve(workdir, capsys):
    code = cli.main(
        ["eval", f"--workdir={workdir}", "--stream", "--cache=sink_window", "--max_tokens=600"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "cache sink_window (n_sink 4, window 12)" in out and "tok/s" in err
    curve = np.load(workdir / "stream_eval_sink_window.npz")["nll"]
    summary = json.loads((workdir / "stream_eval_sink_window.json").read_text())
    assert curve.shape == (599,) and summary["tokens"] == 599
    assert summary["loss"] == pytest.approx(float(curve.mean()), rel=1e-5)
    printed = dict(line.split(" ", 1) for line in out.splitlines() if line.startswith("stream/"))
    assert float(printed["stream/perplexity"]) == pytest.approx(np.exp(curve.mean()), rel=1e-4)


def test_generate_with_a_sink_window_cache_runs_past_the_context(workdir, capsys):
    args = [f"--workdir={workdir}", "--prompt=ROMEO:", "--max_new_tokens=60", "--seed=3"]
    flags = ["--cache=sink_window", "--n_sink=2", "--window=8", "--no-stream"]
    assert cli.main(["generate", *args, *flags]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("ROMEO:") and "generated 60 tokens" in err
    trained = nlpjax.load(workdir)
    cache = StreamConfig("sink_window", 2, 8)
    text = trained.generator(1.0, cache=cache).generate("ROMEO:", 60, seed=3)
    assert out == "ROMEO:" + text + "\n"  # the CLI is the API


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--stream", "--cache=ring"], "unknown --cache='ring'"),
        (["--stream", "--window=17"], "--n_sink=4 + --window=17 exceeds the model's context"),
        (["--stream", "--cache=window", "--window=17"], "config.json; lower --window"),
        (["--stream", "--n_sink=-2"], "--n_sink=-2 must be >= 0"),
        (["--stream", "--cache=dense", "--max_tokens=100"], "holds --capacity=16 tokens"),
        (["--cache=window"], "measure a stream: add --stream"),
        (["--window=8"], "measure a stream: add --stream"),
    ],
)
def test_eval_stream_bad_input_exits_2(workdir, capsys, flags, words):
    before = _saved(workdir)
    code = cli.main(["eval", f"--workdir={workdir}", *flags])
    _, err = capsys.readouterr()
    assert code == 2 and words in _error_line(err)
    assert _saved(workdir) == before  # nothing saved was touched


def test_generate_bad_cache_exits_2(workdir, capsys):
    before = _saved(workdir)
    code = cli.main(["generate", f"--workdir={workdir}", "--cache=sink_window", "--window=40"])
    _, err = capsys.readouterr()
    assert code == 2 and "lower --window to at most 12" in _error_line(err)
    code = cli.main(["generate", f"--workdir={workdir}", "--window=8"])
    _, err = capsys.readouterr()
    assert code == 2 and "need --cache=MODE" in _error_line(err)
    assert _saved(workdir) == before
