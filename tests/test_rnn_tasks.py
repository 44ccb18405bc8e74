"""The recurrent classifier, tagger and seq2seq tasks: metrics, masks, searches, bad input."""

import contextlib
import dataclasses
import json
import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nlpjax import cli
from nlpjax.api import load_config
from nlpjax.data import truecase
from nlpjax.errors import ConfigError
from nlpjax.inference.seq2seq import Seq2SeqGenerator, Seq2SeqTextGenerator
from nlpjax.models.rnn import RNNClassifier, RNNConfig
from nlpjax.models.rnn_seq2seq import RNNSeq2Seq
from nlpjax.tasks.rnn_classify import RNNClassifierTask, RNNTaggerTask
from nlpjax.tasks.rnn_seq2seq import RNNSeq2SeqDataConfig, RNNSeq2SeqTask, rnn_search_start

EXPERIMENTS = Path(__file__).parents[1] / "experiments"
SPEAKERS = f"{EXPERIMENTS / 'shakespeare_speakers.py'}:tiny"
TRUECASE = f"{EXPERIMENTS / 'shakespeare_truecase.py'}:tiny"
MULTI30K = f"{EXPERIMENTS / 'multi30k_lstm.py'}:tiny"

TRAIN = "".join(
    f"{label}\t{text}\n"
    for label, text in [
        ("pos", "a good film"), ("neg", "a bad film"), ("pos", "good and fine"),
        ("neg", "bad and dull"), ("pos", "fine film"), ("neg", "dull film"),
        ("pos", "good good"), ("neg", "bad bad"), ("neg", "so bad"),
    ]
)  # fmt: skip
VALIDATION = "pos\tgood\nneg\tbad film\npos\tfine and good\n"


def _files(directory: Path, train=TRAIN, validation=VALIDATION) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train.tsv").write_text(train)
    (directory / "val.tsv").write_text(validation)
    return f"labelled:{directory / 'train.tsv'};validation={directory / 'val.tsv'}"


def _classifier_args(workdir, spec, *extra) -> list[str]:
    return [
        "train",
        f"--config={SPEAKERS}",
        f"--workdir={workdir}",
        f"--config.data.dataset={spec}",
        "--config.data.batch_size=4",
        "--config.data.tokenizer.min_count=1",
        "--config.train.steps=10",
        "--config.train.progress=false",
        *extra,
    ]


def _one_error_line(err: str, *parts: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for part in parts:
        assert part in lines[0], (part, lines[0])
    assert "Traceback" not in err


# -- classifier ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_classifier(tmp_path_factory):
    """A 10-step classifier run on hand-written files: (workdir, data directory, spec)."""
    root = tmp_path_factory.mktemp("classifier")
    spec = _files(root / "data")
    assert cli.main(_classifier_args(root / "run", spec)) == 0
    return root / "run", root / "data", spec


@contextlib.contextmanager
def _replaced(path: Path, text: str):
    """``path`` holds ``text`` inside the block, its old contents after."""
    old = path.read_text()
    path.write_text(text)
    try:
        yield
    finally:
        path.write_text(old)


def _saved(workdir: Path) -> dict[str, object]:
    """What a refused resume must leave alone: checkpoints and assets."""
    return {
        "checkpoints": sorted(p.name for p in (workdir / "checkpoints").iterdir()),
        "tokenizer": (workdir / "tokenizer.json").read_text(),
        "labels": (workdir / "labels.json").read_text(),
    }


def test_classifier_metrics_on_a_hand_example(tmp_path):
    """Accuracy, macro-F1 and the majority baseline from known predictions."""
    spec = _files(tmp_path)
    task = RNNClassifierTask(load_config(SPEAKERS, {"data.dataset": spec}))
    assert task.class_names == ("neg", "pos") and task.config.model.num_classes == 2
    # validation truth: pos, neg, pos. Predict neg, neg, pos: 2 of 3 right.
    logits = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]], np.float32)
    task.predict_logits = lambda params, inputs, mask: logits
    got = task.evaluate(None, {}, None)
    assert got["accuracy"] == pytest.approx(2 / 3)
    # neg: TP 1, FP 1, FN 0 -> F1 2/3; pos: TP 1, FP 0, FN 1 -> F1 2/3.
    assert got["f1/neg"] == pytest.approx(2 / 3) and got["f1/pos"] == pytest.approx(2 / 3)
    assert got["macro_f1"] == pytest.approx(2 / 3)
    nll = -np.log(np.exp(logits) / np.exp(logits).sum(1, keepdims=True))[[0, 1, 2], [1, 0, 1]]
    assert got["loss"] == pytest.approx(nll.mean(), rel=1e-5)
    # The majority class of train is neg (5 of 9): accuracy 1/3; F1 neg 1/2, pos 0.
    assert got["majority_accuracy"] == pytest.approx(1 / 3)
    assert got["majority_macro_f1"] == pytest.approx((0.5 + 0.0) / 2)


def test_classifier_pooling_reads_only_real_tokens(tmp_path):
    """Other ids under the padding do not change the logits, for every pooling."""
    spec = _files(tmp_path)
    task = RNNClassifierTask(load_config(SPEAKERS, {"data.dataset": spec}))
    arrays = task.arrays("validation")
    inputs, mask = jnp.asarray(arrays["inputs"]), jnp.asarray(arrays["inputs_mask"])
    noisy = jnp.where(mask, inputs, 3)
    for pooling in ("final", "max", "mean"):
        model = RNNClassifier(dataclasses.replace(task.config.model, pooling=pooling))
        variables = model.init(jax.random.PRNGKey(0), inputs, mask)
        logits = jax.jit(lambda x, v=variables, m=model: m.apply(v, x, mask))
        a, b = logits(inputs), logits(noisy)
        np.testing.assert_allclose(a, b, rtol=1e-6, err_msg=pooling)
        assert float(jnp.abs(a).max()) > 0


@pytest.mark.parametrize(
    "validation, where, what",
    [
        ("pos\tgood\nneutral\tso so\n", "val.tsv:2", "unknown label 'neutral'"),
        ("pos\tgood\n\tno label here\n", "val.tsv:2", "missing label"),
    ],
)
def test_label_file_errors_name_the_line_and_keep_the_run(
    trained_classifier, capsys, validation, where, what
):
    workdir, data, spec = trained_classifier
    saved = _saved(workdir)
    with _replaced(data / "val.tsv", validation):
        code = cli.main(_classifier_args(workdir, spec, "--config.train.steps=20"))
    assert code == 2
    _one_error_line(capsys.readouterr().err, where, what)
    assert _saved(workdir) == saved


def test_too_long_input_is_an_error_or_truncated_with_a_count(tmp_path, capsys, caplog):
    spec = _files(tmp_path / "data", validation="pos\tgood good good good film\n")
    args = _classifier_args(tmp_path / "run", spec, "--config.data.max_length=3")
    assert cli.main(args) == 2
    _one_error_line(capsys.readouterr().err, "[validation] example 0", "data.max_length=3")
    checkpoints = tmp_path / "run" / "checkpoints"
    assert not checkpoints.exists() or not any(checkpoints.iterdir())  # failed before step 1
    config = load_config(
        SPEAKERS, {"data.dataset": spec, "data.max_length": "3", "data.overflow": "truncate"}
    )
    with caplog.at_level(logging.WARNING):
        arrays = RNNClassifierTask(config).arrays("validation")
    assert arrays["inputs_mask"].sum() == 3
    assert "truncated 1 of 1 examples to data.max_length=3" in caplog.text


def test_resume_with_another_vocabulary_or_label_set_is_refused(trained_classifier, capsys):
    workdir, data, spec = trained_classifier
    saved = _saved(workdir)
    args = _classifier_args(workdir, spec, "--config.train.steps=20")
    # A tokenizer file replaced by one with the same settings and size, other word ids.
    other = json.loads(saved["tokenizer"])
    other["words"] = other["words"][::-1]
    with _replaced(workdir / "tokenizer.json", json.dumps(other)):
        assert cli.main(args) == 2
    _one_error_line(capsys.readouterr().err, "tokenizer.json", "vocabulary")
    # The same files, relabelled: class ids would mean other classes.
    relabelled = TRAIN.replace("neg\t", "bad\t")
    with _replaced(data / "train.tsv", relabelled), _replaced(data / "val.tsv", "pos\tgood\n"):
        assert cli.main(args) == 2
    _one_error_line(capsys.readouterr().err, "labels.json", "['neg', 'pos']", "['bad', 'pos']")
    assert _saved(workdir) == saved


def test_eval_prints_accuracy_macro_f1_and_the_baseline(trained_classifier, capsys):
    workdir, _, _ = trained_classifier
    assert cli.main(["eval", f"--workdir={workdir}"]) == 0
    out = capsys.readouterr().out
    for key in ("eval/accuracy", "eval/macro_f1", "eval/majority_accuracy", "eval/f1/pos"):
        assert key in out


@pytest.mark.slow  # two tiny trainings; make test keeps the one-device classifier run above
def test_classifier_on_eight_devices_trains_like_one(tmp_path):
    """The batch sharded over 8 simulated devices: the one-device losses and params."""
    import nlpjax
    from nlpjax.training.metrics import read_metrics

    spec = _files(tmp_path / "data")
    base = {"data.dataset": spec, "data.batch_size": "8", "data.tokenizer.min_count": "1"}
    base |= {"train.steps": "10", "train.progress": "false"}
    runs = {
        "one": {**base, "parallel.devices": "1", "parallel.mesh": "data:1"},
        "many": {**base, "parallel.devices": "0", "parallel.mesh": "data:8"},
    }
    for name, overrides in runs.items():
        nlpjax.train(load_config(SPEAKERS, overrides), tmp_path / name)
    losses = {
        name: [r["train/loss"] for r in read_metrics(tmp_path / name) if "train/loss" in r]
        for name in runs
    }
    assert len(losses["one"]) >= 2
    np.testing.assert_allclose(losses["many"], losses["one"], rtol=1e-5)
    got, want = (nlpjax.load(tmp_path / name).params for name in runs)
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        jax.device_get(got),
        jax.device_get(want),
    )


# -- tagger -------------------------------------------------------------------------------


def test_truecase_tags_round_trip():
    line = "First Citizen: İs it O.K.?"
    lower = truecase.lowercase(line)
    assert len(lower) == len(line) and lower.startswith("first citizen: İs it o.k.?")
    tags = truecase.tags(line)
    assert [line[i] for i in np.flatnonzero(tags)] == ["F", "C", "O", "K"]
    assert truecase.apply_tags(lower, tags) == line


@pytest.fixture(scope="module")
def tagger():
    task = RNNTaggerTask(load_config(TRUECASE, {"model.bidirectional": "true"}))
    return task, task.init(jax.random.PRNGKey(0))["params"]


def test_tagger_loss_ignores_padding(tagger):
    """The padded batch's loss = the mean token loss of each line run alone, unpadded,
    whatever the padding holds."""
    task, params = tagger
    arrays = task.arrays("validation")
    batch = {k: v[:2] for k, v in arrays.items()}
    loss_of = jax.jit(lambda b: task.loss(params, {}, b, None, False))  # one compilation
    loss, (metrics, _) = loss_of(batch)
    rng = np.random.default_rng(0)
    pad = ~batch["inputs_mask"]
    noisy = {
        "inputs": np.where(pad, rng.integers(0, task.config.model.vocab_size, pad.shape), 0)
        + np.where(pad, 0, batch["inputs"]),
        "inputs_mask": batch["inputs_mask"],
        "labels": np.where(pad, 1, batch["labels"]),
    }
    noisy_loss, _ = loss_of(noisy)
    per_token = []
    for i in range(2):
        n = int(batch["inputs_mask"][i].sum())
        logits = jax.jit(task.model.apply)({"params": params}, batch["inputs"][i : i + 1, :n])
        labels = jnp.asarray(batch["labels"][i, :n])
        per_token.append(optax.softmax_cross_entropy_with_integer_labels(logits[0], labels))
    want = float(jnp.concatenate(per_token).mean())
    assert float(loss) == pytest.approx(want, rel=1e-5)
    assert float(noisy_loss) == pytest.approx(want, rel=1e-5)
    assert float(metrics["weight"]) == batch["inputs_mask"].sum() < batch["inputs_mask"].size


def test_tagger_needs_a_character_tokenizer(capsys, tmp_path):
    args = ["train", f"--config={TRUECASE}", f"--workdir={tmp_path}"]
    assert cli.main([*args, "--config.data.tokenizer.kind=word"]) == 2
    _one_error_line(capsys.readouterr().err, "data.tokenizer.kind='word'", "'char'")


# -- seq2seq ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seq2seq():
    cfg = RNNConfig(vocab_size=13, num_layers=2, d_hidden=8, d_embed=6, bidirectional=True)
    model = RNNSeq2Seq(cfg)
    source = np.array([[4, 5, 6, 7, 1, 0], [8, 9, 1, 0, 0, 0], [3, 3, 3, 3, 3, 1]], np.int32)
    params = model.init(jax.random.PRNGKey(1), jnp.asarray(source), jnp.zeros((3, 4), jnp.int32))
    # Sharper logits than the initialisation's, so the searches have real choices.
    params = jax.tree_util.tree_map(lambda x: x * 3.0, params["params"])
    return model, params, source


@pytest.mark.parametrize(
    "attention", ["dot", pytest.param("additive", marks=pytest.mark.slow)]
)  # the searches do not depend on the score; the additive step is tested in test_rnn.py
def test_greedy_search_equals_rerunning_the_model_on_each_prefix(attention):
    cfg = RNNConfig(vocab_size=13, num_layers=1, d_hidden=8, attention=attention)
    model = RNNSeq2Seq(cfg)
    source = np.array([[4, 5, 6, 7, 1, 0], [8, 9, 1, 0, 0, 0]], np.int32)
    params = model.init(jax.random.PRNGKey(2), jnp.asarray(source), jnp.zeros((2, 3), jnp.int32))
    params = jax.tree_util.tree_map(lambda x: x * 3.0, params["params"])
    gen = Seq2SeqGenerator(model, params, eos_id=1, search_start=rnn_search_start, max_target_len=0)
    got = gen.generate(source, 7)
    # The decoder is causal: position t's logits read only the inputs up to t, so one
    # fixed (B, 8) buffer (one compilation) serves every prefix.
    inputs = np.zeros((2, 8), np.int32)  # start id 0, then the tokens chosen so far
    mask = jnp.asarray(source != 0)
    logits_of = jax.jit(lambda x: model.apply({"params": params}, jnp.asarray(source), x, mask)[0])
    for t in range(7):
        inputs[:, t + 1] = np.argmax(np.asarray(logits_of(jnp.asarray(inputs)))[:, t], -1)
    want = inputs[:, 1:]
    for row in range(2):  # after the end id the search pads
        ends = np.flatnonzero(want[row] == 1)
        n = ends[0] + 1 if ends.size else 7
        np.testing.assert_array_equal(got[row, :n], want[row, :n])


def test_beam_size_1_equals_greedy(seq2seq):
    model, params, source = seq2seq
    gen = Seq2SeqGenerator(model, params, eos_id=1, search_start=rnn_search_start, max_target_len=0)
    greedy = gen.generate(source, 9)
    beams, _ = gen.beam_search(source, 9, beam_size=1, alpha=0.0)
    np.testing.assert_array_equal(beams[:, 0], greedy)
    wider, scores = gen.beam_search(source, 9, beam_size=3, alpha=0.0)
    assert np.all(np.diff(scores, axis=1) <= 0)  # best first


def test_text_generator_leaves_the_output_length_to_the_caller_for_a_recurrent_decoder(
    seq2seq,
):
    """``nlpjax generate --input`` caps outputs at ``max_output_len``: a recurrent decoder
    has no limit of its own (None). It used to read ``model.config.max_target_len``, which
    an RNNConfig lacks (AttributeError); T5 keeps its KV-cache length."""
    model, params, _ = seq2seq
    gen = Seq2SeqGenerator(model, params, eos_id=1, search_start=rnn_search_start, max_target_len=0)
    assert Seq2SeqTextGenerator(gen, None, "v", max_source_len=8).max_output_len is None


# The task tests prepare Multi30k and train a SentencePiece model (slow: about 30 s on the
# 2-core CPU); make test keeps the searches' tests above, which run the same hook
# (rnn_search_start) through Seq2SeqGenerator.
@pytest.fixture(scope="module")
def seq2seq_task():
    task = RNNSeq2SeqTask(load_config(MULTI30K))
    return task, task.init(jax.random.PRNGKey(0))["params"]


@pytest.mark.slow
def test_seq2seq_task_batches_one_padded_pair_per_row(seq2seq_task):
    task, _ = seq2seq_task
    batch = next(task.train_iterator())
    data = task.config.data
    assert batch["inputs"].shape == (data.batch_size, data.source_length)
    assert batch["targets"].shape == (data.batch_size, data.target_length)
    assert set(np.unique(batch["inputs_segment_ids"])) <= {0, 1}  # never packed
    eos = task.tokenizer.eos_id
    lengths = batch["targets_mask"].sum(1)
    assert np.all(batch["targets"][np.arange(len(lengths)), lengths - 1] == eos)


@pytest.mark.slow
def test_seq2seq_task_translates_through_the_shared_search(seq2seq_task):
    """The task's translator (evaluation, generate) gives the generator's greedy ids, and
    beam search with data.beam_size when evaluating."""
    task, params = seq2seq_task
    texts = [s for s, _ in task.pairs("validation")[:2]]
    translator = task.translator(params)
    assert translator.beam_size == 1
    ids = translator.tokenizer.encode(texts[0])[: translator.max_source_len - 1]
    source = np.concatenate([ids, [task.tokenizer.eos_id]])[None].astype(np.int32)
    raw = translator.generator.generate(source, task._max_len())[0]
    ends = np.flatnonzero(raw == task.tokenizer.eos_id)
    want = task.tokenizer.decode(raw[: ends[0]] if ends.size else raw)
    assert translator.translate(texts[:1], task._max_len(), batch_size=1) == [want]
    beam_task = RNNSeq2SeqTask(load_config(MULTI30K, {"data.beam_size": "3"}))
    assert beam_task.translator(params).beam_size == 3


@pytest.mark.slow
def test_evaluation_reads_whole_sources_and_decodes_past_the_training_widths(seq2seq_task, caplog):
    """data.eval_length: a source longer than the training rows' data.source_length
    reaches the encoder whole (it used to be cut to source_length), and evaluation
    decodes up to eval_length tokens (it used to stop at target_length)."""
    task, params = seq2seq_task
    data = task.config.data
    assert data.eval_length > max(data.source_length, data.target_length)
    assert task._max_len() == data.eval_length
    encode = task.tokenizer.encode
    long = next(s for s, _ in task.pairs("validation") if len(encode(s)) >= data.source_length)
    translator = task.translator(params)
    with caplog.at_level(logging.WARNING):
        source = translator.encode(long)
    assert source.shape == (1, len(encode(long)) + 1)
    assert "were cut" not in caplog.text
    assert translator.generator.generate(source, task._max_len()).shape == (1, data.eval_length)


def test_eval_length_below_zero_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match="data.eval_length must be >= 0"):
        RNNSeq2SeqDataConfig(eval_length=-1)


@pytest.mark.slow  # a 10-step run; make test keeps the max_output_len test above
def test_generate_translates_with_a_trained_recurrent_workdir(tmp_path, capsys):
    """``nlpjax generate --input`` on an rnn_seq2seq workdir prints one line (it used to
    stop on RNNConfig's missing max_target_len)."""
    args = [f"--config={MULTI30K}", f"--workdir={tmp_path}", "--config.train.steps=10"]
    assert cli.main(["train", *args]) == 0
    capsys.readouterr()
    code = cli.main(
        ["generate", f"--workdir={tmp_path}", "--input=Ein Hund läuft.", "--max_new_tokens=5"]
    )
    out = capsys.readouterr().out
    assert code == 0 and out.endswith("\n") and out.count("\n") == 1


@pytest.mark.slow
def test_alignments_are_distributions_over_the_source(seq2seq_task, tmp_path):
    from nlpjax.analysis import alignments

    task, params = seq2seq_task
    texts = [s for s, _ in task.pairs("validation")[:2]]
    for item in alignments.alignments(task, params, texts):
        shape = (len(item["target_tokens"]), len(item["source_tokens"]))
        assert item["weights"].shape == shape
        np.testing.assert_allclose(item["weights"].sum(1), 1.0, rtol=1e-5)
        assert 0 < len(item["target_tokens"]) <= task._max_len()  # the end id, or cut there
        path = Path(alignments.plot_alignment(item, tmp_path / "a.png"))
        assert path.read_bytes()[:4] == b"\x89PNG"
