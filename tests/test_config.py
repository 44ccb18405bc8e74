"""Config loading, overrides and validation."""

import pytest

from nlpjax.api import load_config
from nlpjax.config import ConfigError, apply_overrides, from_json, load_config_file, resolve
from nlpjax.tasks.registry import TASKS
from tests.conftest import REPO, TINY

DEFAULT = str(REPO / "experiments" / "shakespeare_char.py")


def test_default_config_matches_the_reference_experiment():
    c = load_config(DEFAULT)
    assert (c.model.num_layers, c.model.num_heads, c.model.d_model) == (4, 4, 128)
    assert (c.data.context, c.data.batch_size, c.train.steps) == (64, 12, 2000)
    assert c.optim.lr == 1e-3 and c.optim.schedule == "cosine" and c.model.dropout == 0.0


def test_overrides_are_typed():
    c = load_config(
        DEFAULT, {"optim.lr": "3e-4", "train.steps": "500", "model.tie_embeddings": "false"}
    )
    assert c.optim.lr == 3e-4 and isinstance(c.optim.lr, float)
    assert c.train.steps == 500 and isinstance(c.train.steps, int)
    assert c.model.tie_embeddings is False


@pytest.mark.parametrize(
    "key,suggestion",
    [("optim.lrr", "optim.lr"), ("optm.lr", "optim.lr"), ("model.num_head", "model.num_heads")],
)
def test_unknown_key_suggests_closest(key, suggestion):
    with pytest.raises(
        ConfigError, match=f"unknown config key '{key}'.*did you mean '{suggestion}'"
    ):
        load_config(DEFAULT, {key: "1"})


@pytest.mark.parametrize(
    "key,suggestion",
    [
        ("optim.learning_rate", "optim.lr"),
        ("train.num_steps", "train.steps"),
        ("train.max_steps", "train.steps"),
        ("train.train_steps", "train.steps"),
        ("data.batch", "data.batch_size"),
        ("model.hidden_size", "model.d_model"),
        ("model.dim", "model.d_model"),
        ("model.layers", "model.num_layers"),
        ("model.n_head", "model.num_heads"),
        ("data.seq_len", "data.context"),
        ("optim.warmup", "optim.warmup_steps"),
        ("optim.min_lr", "optim.min_lr_ratio"),
        ("eval.eval_every", "eval.every"),
        ("optim.beta1", "optim.b1"),
    ],
)
def test_unknown_key_suggests_aliases_and_substrings(key, suggestion):
    with pytest.raises(ConfigError) as info:
        load_config(DEFAULT, {key: "1"})
    assert str(info.value) == f"unknown config key '{key}'; did you mean '{suggestion}'?"


def test_unrelated_key_gets_no_far_fetched_suggestion():
    with pytest.raises(ConfigError) as info:
        load_config(DEFAULT, {"optim.foo": "1"})
    assert str(info.value) == "unknown config key 'optim.foo'"


@pytest.mark.parametrize(
    "key,text,expected",
    [
        ("train.steps", "abc", "an integer expected, got 'abc'; for example --config.train.steps="),
        ("train.steps", "2.5", "an integer expected"),
        ("optim.lr", "fast", "a number expected, got 'fast'; for example --config.optim.lr="),
        ("model.tie_embeddings", "maybe", "true or false expected"),
    ],
)
def test_bad_value_type_names_key_value_and_example(key, text, expected):
    with pytest.raises(ConfigError) as info:
        load_config(DEFAULT, {key: text})
    message = str(info.value)
    assert message.startswith(f"--config.{key}={text!r}: ") and expected in message
    assert "a int" not in message and "\n" not in message


def test_warmup_longer_than_the_run_is_warned(caplog):
    with caplog.at_level("WARNING", logger="nlpjax.config"):
        load_config(DEFAULT, {"train.steps": "50", "optim.warmup_steps": "100"})
    assert any("optim.warmup_steps=100 >= train.steps=50" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="nlpjax.config"):
        load_config(DEFAULT, {"train.steps": "500", "optim.warmup_steps": "100"})
    assert not caplog.records


def test_impossible_shapes_are_errors():
    with pytest.raises(ConfigError, match="divisible by model.num_heads"):
        load_config(DEFAULT, {"model.num_heads": "3"})
    with pytest.raises(ConfigError, match="multiple of train.steps_per_dispatch"):
        load_config(DEFAULT, {"train.log_every": "7"})
    with pytest.raises(ConfigError, match="model.positions must be one of"):
        load_config(DEFAULT, {"model.positions": "alibi"})


def test_variant_and_json_round_trip():
    c = load_config(TINY)
    assert c.model.d_model == 32 and c.train.steps == 40
    assert from_json(c.to_json(), TASKS) == c


def test_unknown_key_inside_the_file_is_an_error(tmp_path):
    path = tmp_path / "exp.py"
    path.write_text(
        (REPO / "experiments" / "shakespeare_char.py").read_text()
        + "\n_get = get_config\n"
        + "def get_config(arg=None):\n    c = _get(arg)\n"
        + "    c.optim.learning_rate = 1.0\n    return c\n"
    )
    with pytest.raises(ConfigError, match="unknown config key 'optim.learning_rate'"):
        load_config(str(path))


def test_missing_config_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("experiments/nope.py")


@pytest.mark.parametrize(
    "body,line,kind",
    [
        ("import ml_collections\n\ndef get_config(arg=None)\n    return None\n", 3, "SyntaxError"),
        ("def get_config(arg=None):\n    x = 1\n    return 1 / 0\n", 3, "ZeroDivisionError"),
        ("import no_such_module_xyz\n", 1, "ModuleNotFoundError"),
    ],
)
def test_broken_config_file_is_a_one_line_error_with_exit_2(tmp_path, capsys, body, line, kind):
    from nlpjax import cli

    path = tmp_path / "broken.py"
    path.write_text(body)
    workdir = tmp_path / "w"
    code = cli.main(["train", f"--config={path}", f"--workdir={workdir}"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert f"{path}:{line}" in err and kind in err and "Traceback" not in err
    assert not workdir.exists()  # nothing was started


def test_tokenizer_section_overrides_and_errors():
    c = load_config(
        DEFAULT, {"data.tokenizer.kind": "sentencepiece", "data.tokenizer.vocab_size": "500"}
    )
    assert (c.data.tokenizer.kind, c.data.tokenizer.vocab_size) == ("sentencepiece", 500)
    assert load_config(DEFAULT).data.tokenizer.kind == "char"
    with pytest.raises(
        ConfigError, match=r"'data.tokenizer' is a section.*data.tokenizer.kind=byte"
    ):
        load_config(DEFAULT, {"data.tokenizer": "byte"})
    with pytest.raises(ConfigError, match=r"^data.tokenizer: tokenizer kind must be one of"):
        load_config(DEFAULT, {"data.tokenizer.kind": "wordpiece"})
    with pytest.raises(ConfigError, match="did you mean 'data.tokenizer.vocab_size'"):
        load_config(DEFAULT, {"data.tokenizer.vocab": "500"})


def test_python_valued_overrides_are_checked_like_command_line_ones():
    """Experiment variants and the Python API pass Python values to apply_overrides."""
    cd = load_config_file(DEFAULT)
    apply_overrides(cd, {"optim.lr": 3e-4, "train.progress": False, "train.steps": 500})
    assert (cd.optim.lr, cd.train.progress, cd.train.steps) == (3e-4, False, 500)
    with pytest.raises(ConfigError, match="unknown config key 'optim.lrr'.*optim.lr"):
        apply_overrides(cd, {"optim.lrr": 1e-3})
    with pytest.raises(ConfigError, match="train.steps=.*an integer expected"):
        apply_overrides(cd, {"train.steps": 2.5})


def test_config_loader_takes_the_task_registry_it_is_given():
    tree = load_config_file(TINY).to_dict()
    assert resolve(tree, TASKS).task == "lm"
    with pytest.raises(ConfigError, match="unknown task 'lm'; known tasks: none"):
        resolve(tree, {})


def test_keys_a_file_leaves_out_take_their_defaults_and_can_be_overridden(tmp_path):
    """A config file that predates an option (here: no train.init_from, no
    data.tokenizer.min_count) still takes that option on the command line."""
    path = tmp_path / "exp.py"
    path.write_text(
        (REPO / "experiments" / "shakespeare_char.py").read_text()
        + "\n_get = get_config\n"
        + "def get_config(arg=None):\n    c = _get(arg)\n"
        + "    del c.train['init_from']\n    del c.data.tokenizer['min_count']\n    return c\n"
    )
    plain = load_config(str(path))
    assert plain.train.init_from == "" and plain.data.tokenizer.min_count == 1
    config = load_config(
        str(path), {"train.init_from": "/tmp/pretrained", "data.tokenizer.min_count": "3"}
    )
    assert config.train.init_from == "/tmp/pretrained"
    assert config.data.tokenizer.min_count == 3
    with pytest.raises(ConfigError, match="unknown config key 'train.init_frm'"):
        load_config(str(path), {"train.init_frm": "x"})


def _experiment_variants() -> list[str]:
    """``FILE:VARIANT`` for every variant every experiment config file declares."""
    import importlib.util

    specs = []
    for path in sorted((REPO / "experiments").glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"_exp_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if hasattr(module, "get_config"):  # the rest are scripts (reports, sweeps)
            specs += [f"{path}:{name}" for name in getattr(module, "VARIANTS", {"default": 0})]
    return specs


def test_every_variant_of_every_experiment_loads():
    """A variant that sets a key its base config lacks fails here, not at the user's run."""
    specs = _experiment_variants()
    assert len(specs) > 20
    for spec in specs:
        config = load_config(spec)
        assert config.task in TASKS, spec
