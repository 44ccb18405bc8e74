"""train.xla_options: XLA compiler options for the training programs (jit mode)."""

import platform

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from nlpjax import api, cli
from nlpjax.config import ParallelConfig, parse_xla_options
from nlpjax.errors import ConfigError
from nlpjax.training import parallel
from tests.conftest import TINY

ONEDNN = "xla_cpu_use_onednn=true,xla_cpu_experimental_onednn_fusion_type=LIBRARY_FUSION_TYPE_DOT"


def test_parse_types_and_empty():
    assert parse_xla_options("") == {}
    assert parse_xla_options(" a=true, b=False ,c=12, d=-3, e=LIBRARY_FUSION_TYPE_DOT,") == {
        "a": True,
        "b": False,
        "c": 12,
        "d": -3,
        "e": "LIBRARY_FUSION_TYPE_DOT",
    }


@pytest.mark.parametrize("text", ["xla_cpu_use_onednn", "=true", "a=", "--xla_cpu_use_onednn=true"])
def test_malformed_list_is_refused_when_the_config_loads(text):
    with pytest.raises(ConfigError, match="train.xla_options: .* is not name=value"):
        api.load_config(TINY, {"train.xla_options": text})


@pytest.mark.parametrize(
    "text, reason",
    [
        ("xla_cpu_use_onednm=true", "No such compile option: 'xla_cpu_use_onednm'"),
        ("xla_cpu_use_onednn=yes", "'yes' is not a valid bool value"),
    ],
)
def test_options_xla_refuses_are_a_config_error(text, reason):
    with pytest.raises(ConfigError, match="train.xla_options: ") as error:
        parallel.compiler_options(text)
    assert reason in str(error.value)


def _compiled_text(options):
    placement = parallel.build_placement(ParallelConfig(devices=1, mesh="data:1"))
    replicated = NamedSharding(placement.mesh, P())

    def multi_step(state, batches):
        w = jnp.tanh(batches["x"] @ state["w"])
        return {"w": w}, w[0, 0]

    step = parallel.compile_steps(
        placement, multi_step, {"w": replicated}, compiler_options=options
    )
    state = {"w": jnp.ones((256, 256))}
    return step.lower(state, {"x": jnp.ones((256, 256))}).compile().as_text().lower()


@pytest.mark.skipif(
    jax.default_backend() != "cpu" or platform.machine() not in ("x86_64", "AMD64"),
    reason="oneDNN dot fusion is an XLA:CPU option on x86",
)
def test_options_reach_the_compiled_training_program():
    assert "onednn" not in _compiled_text(None)
    assert "onednn" in _compiled_text(parallel.compiler_options(ONEDNN))


def test_pmap_takes_no_options():
    placement = parallel.build_placement(ParallelConfig(devices=2, mode="pmap", mesh="data:2"))
    with pytest.raises(ConfigError, match="train.xla_options applies to parallel.mode=jit"):
        parallel.compile_steps(placement, lambda s, b: (s, 0.0), None, compiler_options={"a": 1})


def test_cli_refuses_a_misspelled_option_before_saving_anything(tmp_path, capsys):
    workdir = tmp_path / "run"
    code = cli.main(
        [
            "train",
            f"--config={TINY}",
            f"--workdir={workdir}",
            "--config.train.progress=false",
            "--config.train.xla_options=xla_cpu_use_onednm=true",
        ]
    )
    captured = capsys.readouterr()
    assert code == 2
    assert "error: train.xla_options: No such compile option: 'xla_cpu_use_onednm'" in captured.err
    # the printed overrides name the key, which the experiment file leaves out
    assert "train.xla_options '' -> 'xla_cpu_use_onednm=true'" in captured.out
    assert not (workdir / "checkpoints").exists()
