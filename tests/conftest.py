"""Test setup: 8 simulated CPU devices, offline data from NLPJAX_DATA_DIR, strict numerics."""

import os
from pathlib import Path

# Must happen before jax is imported anywhere.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["NLPJAX_OFFLINE"] = "1"
REPO = Path(__file__).resolve().parents[1]
# One XLA compilation cache for the whole test session (both xdist workers and every CLI
# subprocess inherit it): the suite compiles the same tiny programs again and again. It
# lives in the clone's .pytest_cache, so a fresh clone starts cold.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".pytest_cache" / "xla"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
if not os.environ.get("NLPJAX_DATA_DIR"):
    os.environ["NLPJAX_DATA_DIR"] = str((REPO.parent / "shared" / "data").resolve())

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

TINY = str(REPO / "experiments" / "shakespeare_char.py") + ":tiny"


@pytest.fixture(scope="session", autouse=True)
def _tfds_dir(tmp_path_factory):
    """Prepared TFDS datasets go to one temporary directory for the whole session."""
    path = tmp_path_factory.mktemp("tfds")
    os.environ["TFDS_DATA_DIR"] = str(path)
    yield path


@pytest.fixture
def tiny_config():
    from nlpjax.api import load_config

    def make(**overrides):
        return load_config(TINY, {k.replace("__", "."): str(v) for k, v in overrides.items()})

    return make


# Tests and variants that make test leaves to make test-all (its 10-minute budget on 2
# cores); what stays in make test for each is named beside it.
SLOW_VARIANTS = {
    # the [rope] variant stays; learned positions keep test_cached_prefill_then_steps_...
    "tests/test_decode.py::test_greedy_generation_with_cache_matches_uncached[learned]",
    # [rope] stays: the ban is applied to the logits, whatever the positions
    "tests/test_decode.py::test_banned_ids_are_never_chosen_even_with_the_largest_logit[learned]",
    # [rope] stays for both
    "tests/test_accel.py::test_bfloat16_forward_is_close_to_float32_and_params_stay_float32[learned]",
    "tests/test_accel.py::test_xla_attention_gradients_equal_the_reference[learned]",
    # test_cached_prefill_then_steps_equal_full_forward checks the cache in make test
    "tests/test_decode.py::test_greedy_generation_with_cache_matches_uncached[rope]",
    # the v1.0 layout (tied embeddings, ReLU) stays; v1.1 differs in its name table only
    "tests/test_hf_interop.py::test_imported_logits_equal_the_transformers_logits[v1.1]",
    "tests/test_hf_interop.py::test_export_of_the_import_is_the_checkpoint_tensor_by_tensor[v1.1]",
    # the other input-feeding tests (step 0, step by step = teacher forcing) stay
    "tests/test_rnn.py::test_input_feeding_with_a_zero_feed_kernel_is_the_decoder_without_feeding"
    "[dot]",
    # test_resume.py's signal test (saved after the next dispatch) and test_task_v2's
    # SIGKILL resume stay; this one runs the CLI in a subprocess twice
    "tests/test_cli.py::test_sigterm_saves_exits_zero_and_resumes_to_the_same_state",
    # test_microbatches_equal_the_whole_batch stays; this adds the 8-device fsdp+tensor mesh
    "tests/test_accel_train.py::"
    "test_fsdp_tensor_mesh_has_no_full_rematerialization_and_microbatches_match",
    # test_cli.py's generate tests and test_api's own generate tests stay
    "tests/test_api.py::test_generate_equals_the_cli",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid in SLOW_VARIANTS:
            item.add_marker(pytest.mark.slow)
