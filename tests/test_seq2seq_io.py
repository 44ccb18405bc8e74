"""Seq2seq workdirs at the command line: ``generate --input/--input_file`` (outputs only,
one per line), ``eval`` with sacrebleu scores and the hypotheses file, and the bad input
of parallel data (empty targets skipped with a count, over-long sources cut or refused).

A tiny random T5 is written as a step-0 workdir on a small user parallel corpus (no
training, no Multi30k), so every test here takes seconds."""

import dataclasses
import logging

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sacrebleu

from nlpjax import api, cli
from nlpjax.data.spm_tokenizer import SentencePieceTokenizer
from nlpjax.data.tokenizers import save_tokenizer
from nlpjax.interop.hf_workdir import imported_config_tree, save_step0
from nlpjax.models.t5 import T5, T5Config

TRAIN = [
    ("Ein Mann fährt Rad.", "A man rides a bike."),
    ("Zwei Hunde spielen.", "Two dogs play."),
    ("Eine Frau liest ein Buch.", "A woman reads a book."),
    ("Kinder spielen im Park.", "Children play in the park."),
] * 6
LONG = "Ein Mann und eine Frau und Hunde und Kinder spielen im Park und lesen ein Buch im Park."
TEST = [
    ("Ein Mann liest.", "A man reads."),
    ("Zwei Frauen spielen.", ""),  # an empty target: skipped
    (LONG, "A long sentence."),
    ("Kinder fahren Rad.", "Children ride bikes."),
]


def _write(directory, name, pairs):
    (directory / f"{name}.de").write_text("".join(s + "\n" for s, _ in pairs))
    (directory / f"{name}.en").write_text("".join(t + "\n" for _, t in pairs))
    return f"{directory / name}.de,{directory / name}.en"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    train, test = _write(root, "train", TRAIN), _write(root, "test", TEST)
    return f"parallel:{train};validation={test};test={test};languages=de,en"


def make_workdir(directory, dataset: str, **overrides):
    """A step-0 seq2seq workdir: a SentencePiece model of the corpus and a random T5."""
    texts = [t for pair in TRAIN for t in pair]
    tokenizer = SentencePieceTokenizer.train(texts, vocab_size=60, num_registers=0)
    model = T5Config(
        vocab_size=tokenizer.vocab_size,
        d_model=16,
        num_heads=2,
        head_dim=8,
        d_ff=32,
        num_encoder_layers=1,
        num_decoder_layers=1,
        max_target_len=6,
    )
    settings = {
        "data.dataset": dataset,
        "data.prefix": "",
        "data.source_length": 32,
        "data.target_length": 8,
        "data.batch_size": 2,
        "data.bleu_examples": -1,
        "eval.num_batches": 1,
    }
    config = api.load_config(imported_config_tree(model, tokenizer), settings | overrides)
    directory.mkdir(parents=True)
    save_tokenizer(tokenizer, directory / "tokenizer.json")
    init = T5(model).init(
        jax.random.PRNGKey(1), jnp.zeros((1, 4), jnp.int32), jnp.zeros((1, 4), jnp.int32)
    )
    save_step0(config, directory, flax.linen.meta.unbox(init)["params"])
    return directory


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, corpus):
    return make_workdir(tmp_path_factory.mktemp("s2s") / "run", corpus)


@pytest.fixture(scope="module")
def strict_workdir(tmp_path_factory, workdir):
    """``workdir`` as if trained with ``data.too_long=error`` (its config edited)."""
    import json
    import shutil

    strict = tmp_path_factory.mktemp("strict") / "run"
    shutil.copytree(workdir, strict)
    config = json.loads((strict / "config.json").read_text())
    config["data"]["too_long"] = "error"
    (strict / "config.json").write_text(json.dumps(config))
    return strict


def _greedy(workdir, texts):
    trained = api.load(workdir)
    translator = trained.task.translator(trained.params)
    return translator.translate(texts, trained.config.model.max_target_len)


def test_generate_input_prints_only_the_translation(workdir, capsys):
    capsys.readouterr()
    assert cli.main(["generate", f"--workdir={workdir}", "--input=Ein Mann fährt Rad."]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == _greedy(workdir, ["Ein Mann fährt Rad."])
    assert not out.startswith("Ein Mann") and out.count("\n") == 1


def test_generate_input_file_prints_one_line_per_input_line(workdir, tmp_path, capsys):
    inputs = ["Zwei Hunde spielen.", "", "Eine Frau liest ein Buch.", "Ein Mann fährt Rad."]
    path = tmp_path / "sources.de"
    path.write_text("\n".join(inputs) + "\n")
    capsys.readouterr()
    assert cli.main(["generate", f"--workdir={workdir}", f"--input_file={path}"]) == 0
    lines = capsys.readouterr().out.split("\n")
    assert lines[-1] == "" and len(lines) == len(inputs) + 1  # one line each, then the end
    nonempty = [t for t in inputs if t]
    expected = _greedy(workdir, nonempty)
    assert [lines[i] for i, t in enumerate(inputs) if t] == expected and lines[1] == ""


def test_generate_input_errors_are_one_line(workdir, tmp_path, capsys):
    cases = [
        ([f"--input_file={tmp_path / 'missing.txt'}"], f"--input_file={tmp_path / 'missing.txt'}"),
        (["--input=a", f"--input_file={tmp_path}"], "give --input or --input_file, not both"),
        ([], "give the text to translate: --input=TEXT or --input_file=PATH"),
    ]
    for flags, message in cases:
        capsys.readouterr()
        code = cli.main(["generate", f"--workdir={workdir}", *flags])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_eval_scores_with_sacrebleu_and_writes_the_hypotheses(workdir, capsys, caplog):
    capsys.readouterr()
    with caplog.at_level(logging.WARNING):
        assert cli.main(["eval", f"--workdir={workdir}", "--split=test"]) == 0
    out, logged = capsys.readouterr().out, caplog.text
    path = workdir / "hypotheses_test_0.txt"
    hypotheses = path.read_text().split("\n")[:-1]
    references = [t for _, t in TEST if t]  # the empty target is skipped
    assert len(hypotheses) == 3 and hypotheses == _greedy(workdir, [s for s, t in TEST if t])
    bleu = sacrebleu.corpus_bleu(hypotheses, [references]).score
    chrf = sacrebleu.corpus_chrf(hypotheses, [references]).score
    assert f"eval/bleu {bleu:.6f}" in out and f"eval/chrf {chrf:.6f}" in out
    assert "skipped 1 of 4 pairs with an empty target" in logged
    assert "1 of 4 sources are longer than data.source_length=32 tokens and are cut" in logged
    assert "inputs were over" not in logged  # counted once per split, not per evaluation


def test_eval_beam_size_scores_the_beam_search_and_keeps_the_greedy_file(workdir, capsys):
    trained = api.load(workdir)
    sources = [s for s, t in TEST if t]
    beams = trained.task.translator(trained.params, beam_size=3).translate(
        sources, trained.config.model.max_target_len
    )
    greedy_file = workdir / "hypotheses_test_0.txt"
    assert cli.main(["eval", f"--workdir={workdir}", "--split=test"]) == 0
    greedy = greedy_file.read_text()
    capsys.readouterr()
    assert cli.main(["eval", f"--workdir={workdir}", "--split=test", "--beam_size=3"]) == 0
    out = capsys.readouterr().out
    assert (workdir / "hypotheses_test_0_beam3.txt").read_text().splitlines() == beams
    assert greedy_file.read_text() == greedy  # the greedy translations are not overwritten
    bleu = sacrebleu.corpus_bleu(beams, [[t for _, t in TEST if t]]).score
    assert f"eval/bleu {bleu:.6f}" in out
    for flags, message in [
        (["--beam_size=0"], "--beam_size=0: give N >= 1"),
        (["--beam_size=2", "--stream"], "without --stream"),
    ]:
        code = cli.main(["eval", f"--workdir={workdir}", *flags])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and message in err[0]


def test_an_over_long_source_is_cut_or_refused_as_configured(
    workdir, strict_workdir, capsys, caplog
):
    with caplog.at_level(logging.WARNING):
        assert cli.main(["generate", f"--workdir={workdir}", f"--input={LONG}"]) == 0
    cut = "1 of 1 inputs were over 32 tokens (data.source_length) and were cut"
    assert caplog.text.count(cut) == 1
    assert len(capsys.readouterr().out.splitlines()) == 1
    code = cli.main(["generate", f"--workdir={strict_workdir}", f"--input={LONG}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "more than the 32 the model takes" in err[0]
    before = sorted(p.name for p in strict_workdir.iterdir())
    code = cli.main(["eval", f"--workdir={strict_workdir}", "--split=test"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ")
    assert "1 of 4 sources are longer than data.source_length=32" in err[0]
    assert "the first is #2" in err[0] and "data.too_long=truncate" in err[0]
    assert sorted(p.name for p in strict_workdir.iterdir()) == before


def test_pair_stats_counts_empty_targets_and_long_sources():
    from nlpjax.data.seq2seq_pipeline import pair_stats

    def encode_batch(texts):
        return [np.zeros(len(t.split())) for t in texts]

    stats = pair_stats(["a b c", "a", "a b c d e", "b"], ["x", " ", "y", "z"], encode_batch, 4)
    assert (stats.total, stats.empty_targets, stats.too_long) == (4, 1, 1)
    assert (stats.longest, stats.first_too_long) == (6, 2)


def span_config(dataset: str, **overrides):
    model = T5Config(d_model=16, num_heads=2, head_dim=8, d_ff=32, max_target_len=8)
    model = dataclasses.replace(model, num_encoder_layers=1, num_decoder_layers=1)
    settings = {
        "data.dataset": dataset,
        "data.objective": "span_corruption",
        "data.tokenizer.vocab_size": 60,
        "data.tokenizer.num_registers": 0,
        "data.tokenizer.num_sentinels": 20,
        "data.source_length": 24,
        "data.batch_size": 2,
        "eval.num_batches": 1,
        "train.steps": 10,
        "train.progress": False,
    }
    return api.load_config(imported_config_tree(model, None), settings | overrides)


def test_span_corruption_batches_rebuild_the_text_stream(corpus):
    """Inputs with their masked spans put back (from the targets) are the split's texts,
    every field of every pair in order (validation is read unshuffled)."""
    from nlpjax.tasks.seq2seq import Seq2SeqTask

    task = Seq2SeqTask(span_config(corpus), None)
    tok = task.tokenizer
    batch = task.eval_batches("validation")
    inputs, targets = batch["inputs"][0, 0], batch["targets"][0, 0]
    sentinels = {tok.sentinel_id(i) for i in range(tok.num_sentinels)}
    assert inputs.shape == (24,) and inputs[0] not in sentinels and targets[0] in sentinels
    spans, current = {}, None
    for t in targets[targets > 1].tolist():
        current = spans.setdefault(t, []) if t in sentinels else (current.append(t) or current)
    kept = inputs[inputs > 1].tolist()
    rebuilt = [x for t in kept for x in (spans[t] if t in sentinels else [t])]
    stream = np.concatenate([tok.encode(text) for pair in TEST for text in pair if text.strip()])
    assert len(spans) >= 1 and rebuilt == stream[: len(rebuilt)].tolist()


def test_span_corruption_without_sentinel_ids_is_an_error_naming_the_fix(corpus, tmp_path, capsys):
    import json

    config_file = tmp_path / "span.json"
    tree = span_config(corpus, **{"data.tokenizer.num_sentinels": 0}).to_dict()
    config_file.write_text(json.dumps(tree))
    experiment = tmp_path / "span.py"
    experiment.write_text(
        "import json, ml_collections\n"
        f"def get_config(arg=None):\n    return ml_collections.ConfigDict("
        f"json.load(open({str(config_file)!r})))\n"
    )
    workdir = tmp_path / "run"
    code = cli.main(["train", f"--config={experiment}", f"--workdir={workdir}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ")
    assert "has 0 sentinel ids: set data.tokenizer.num_sentinels=100" in err[0]
    assert not workdir.exists() or not any(workdir.iterdir())


RUN = {  # a few dropout steps of the tiny T5 on the small corpus, every step logged
    "model.dropout": 0.1,
    "train.steps": 10,
    "train.steps_per_dispatch": 1,
    "train.log_every": 1,
    "train.progress": False,
    "eval.every": 5,
    "checkpoint.every": 5,
    "data.bleu_examples": 0,
}


def _train_losses(workdir) -> dict[int, float]:
    from nlpjax.training.metrics import read_metrics

    return {r["step"]: r["train/loss"] for r in read_metrics(workdir) if "train/loss" in r}


# Two short trainings each: make test-all. make test still proves exact resume for the
# LM (tests/test_resume.py) and the T5's sharded forward and gradient (tests/test_t5.py).
@pytest.mark.slow
def test_a_resumed_seq2seq_run_repeats_the_uninterrupted_one_bitwise(tmp_path, corpus):
    """Packed pairs, dropout and the data position: steps 6..10 after a resume from
    step 5 equal those of the run that went on."""
    reference = make_workdir(tmp_path / "reference", corpus, **RUN)
    api.train(api.load(reference).config, reference)
    resumed = make_workdir(tmp_path / "resumed", corpus, **RUN)
    api.train(api.load_config(api.load(resumed).config, {"train.steps": 5}), resumed)
    api.train(api.load(reference).config, resumed)
    want, got = _train_losses(reference), _train_losses(resumed)
    assert sorted(got) == list(range(1, 11)) and got == want
    params = [api.load(w).params for w in (reference, resumed)]
    for a, b in zip(*map(jax.tree_util.tree_leaves, params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_a_seq2seq_run_sharded_over_8_devices_equals_one_device(tmp_path, corpus):
    from nlpjax.data.pipeline import stack_batches
    from nlpjax.training import parallel
    from nlpjax.training.step import make_train_step, scan_steps

    def losses(mesh: str, devices: int):
        workdir = tmp_path / mesh.replace(",", "_").replace(":", "")
        settings = RUN | {"parallel.mesh": mesh, "parallel.devices": devices}
        settings["data.batch_size"] = 8  # 2 rows per data x fsdp shard
        config = api.load(make_workdir(workdir, corpus, **settings)).config
        placement = parallel.build_placement(config.parallel)
        run = api.build_run(config, workdir, placement)
        it = run.task.train_iterator()
        host = stack_batches([next(it) for _ in range(4)])
        step = make_train_step(run.task, run.tx, run.schedule)
        compiled = parallel.compile_steps(placement, scan_steps(step), run.state_shardings)
        state = parallel.place_state(placement, run.state, run.state_shardings)
        with placement.context():
            _, metrics = compiled(state, parallel.put_batches(placement, host))
        return np.asarray(parallel.metrics_of(placement, metrics)["loss"])

    single = losses("data:1", 1)
    np.testing.assert_allclose(losses("data:2,fsdp:2,tensor:2", 8), single, rtol=1e-5)


@pytest.mark.parametrize("prefix", ["", "tiny_"])
def test_the_pretraining_experiment_runs_share_model_and_vocabulary(prefix):
    """What train.init_from needs from pretrain -> finetune (same model signature, same
    tokenizer settings); finetune + pretrain steps equal scratch's."""
    from tests.conftest import REPO

    spec = str(REPO / "experiments" / "t5_pretrain_multi30k.py")
    runs = {v: api.load_config(f"{spec}:{prefix}{v}") for v in ("pretrain", "finetune", "scratch")}
    assert runs["pretrain"].data.objective == "span_corruption"
    assert {runs[v].data.objective for v in ("finetune", "scratch")} == {"translation"}
    assert runs["pretrain"].data.tokenizer.num_sentinels == 100
    for run in runs.values():
        assert run.model.signature() == runs["pretrain"].model.signature()
        assert run.data.tokenizer == runs["pretrain"].data.tokenizer
    steps = {v: c.train.steps for v, c in runs.items()}
    assert steps["pretrain"] + steps["finetune"] == steps["scratch"]
