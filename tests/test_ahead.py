"""AheadCompiled: a jitted function compiled in a background thread for one signature."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nlpjax.training.ahead import AheadCompiled

ONE = jax.sharding.SingleDeviceSharding(jax.devices()[0])  # where jnp puts arrays


def _double(x):
    return {"y": x["x"] * 2.0}


def test_matching_calls_run_the_ahead_program_and_others_the_jitted_one():
    jitted = jax.jit(_double)
    abstract = {"x": jax.ShapeDtypeStruct((3,), jnp.float32, sharding=ONE)}
    ahead = AheadCompiled(jitted, (abstract,))
    assert ahead.wait()
    x = jnp.arange(3.0)
    np.testing.assert_array_equal(ahead({"x": x})["y"], [0.0, 2.0, 4.0])
    assert ahead.compiled_calls == 1
    # another shape goes through jit (compiled as usual), not the ahead program
    np.testing.assert_array_equal(ahead({"x": jnp.ones(2)})["y"], [2.0, 2.0])
    assert ahead.compiled_calls == 1


def test_a_failed_ahead_compilation_falls_back_and_reports_on_the_call():
    def bad(x):
        return {"y": x["x"] @ x["x"]}  # rank 1 x rank 1 is fine; rank 2 mismatched is not

    jitted = jax.jit(bad)
    abstract = {"x": jax.ShapeDtypeStruct((2, 3), jnp.float32, sharding=ONE)}
    ahead = AheadCompiled(jitted, (abstract,))
    assert not ahead.wait()
    with pytest.raises(TypeError):
        ahead({"x": jnp.ones((2, 3))})
    assert ahead.compiled_calls == 0


def test_the_compiling_thread_traces_under_the_callers_context():
    """The mesh and Flax's axis rules are thread-local: the background trace must run
    inside the context the loop trains under (``Placement.context``)."""
    import contextlib
    import threading

    local, seen = threading.local(), []

    @contextlib.contextmanager
    def context():
        local.inside = True
        try:
            yield
        finally:
            local.inside = False

    def traced(x):
        seen.append(getattr(local, "inside", False))  # runs at trace time, in the thread
        return _double(x)

    abstract = {"x": jax.ShapeDtypeStruct((3,), jnp.float32, sharding=ONE)}
    ahead = AheadCompiled(jax.jit(traced), (abstract,), context=context)
    assert ahead.wait()
    assert seen == [True]
    assert ahead({"x": jnp.arange(3.0)})["y"].tolist() == [0.0, 2.0, 4.0]
    assert seen == [True]  # the call ran the ahead program: no second trace


def test_wait_lowered_returns_once_traced_and_also_when_the_attempt_fails():
    traces = []

    def traced(x):
        traces.append(1)
        return _double(x)

    abstract = {"x": jax.ShapeDtypeStruct((3,), jnp.float32, sharding=ONE)}
    ahead = AheadCompiled(jax.jit(traced), (abstract,))
    ahead.wait_lowered()
    assert traces == [1]  # traced (and lowered) by the time it returns
    assert ahead.wait()

    def bad(x):
        raise ValueError("fails while tracing")

    failed = AheadCompiled(jax.jit(bad), (abstract,))
    failed.wait_lowered()  # does not hang
    assert not failed.wait()


def test_the_loop_reads_its_data_after_the_step_is_lowered(tmp_path, monkeypatch):
    """The tracing holds the GIL on the way to the first step: the host's data set-up
    (Python-heavy) waits for it and overlaps XLA's compilation instead."""
    from nlpjax import api
    from nlpjax.tasks.sgns import SGNSTask
    from nlpjax.training import ahead
    from tests.conftest import REPO

    made, seen = [], []
    init, iterator = ahead.AheadCompiled.__init__, SGNSTask.train_iterator

    def record_init(self, *args, **kwargs):
        made.append(self)
        init(self, *args, **kwargs)

    def record_iterator(self):
        seen.append(made[-1]._lowered.is_set())
        return iterator(self)

    monkeypatch.setattr(ahead.AheadCompiled, "__init__", record_init)
    monkeypatch.setattr(SGNSTask, "train_iterator", record_iterator)
    config = str(REPO / "experiments" / "sgns_shakespeare.py") + ":tiny"
    api.train(api.load_config(config, {"train.progress": False}), tmp_path)
    assert len(made) == 1 and seen == [True]
