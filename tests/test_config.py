"""Config loading, overrides and validation."""

import pytest

from nlpjax.config import ConfigError, from_json, load_config
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


def test_bad_value_type_is_an_error():
    with pytest.raises(ConfigError, match="train.steps.*expected a int"):
        load_config(DEFAULT, {"train.steps": "many"})


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
    assert from_json(c.to_json()) == c


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
