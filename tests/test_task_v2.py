"""The Task interface v2, proven with the test-only task of ``tests/proof_task.py``.

One task with a batch-axis carry, a sparse row update, its own optimizer and an
``evaluate`` that samples trains under four layouts with equal losses, resumes bitwise
after SIGKILL, and resumes onto other layouts.
"""

import dataclasses
import os
import shutil
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from nlpjax import api
from nlpjax.errors import ConfigError
from nlpjax.tasks.base import Rows, carry_leaf, make_loss_average
from nlpjax.training import loop as loop_lib
from nlpjax.training import parallel
from nlpjax.training.metrics import read_metrics
from nlpjax.training.step import make_train_step, sparse_gradients
from tests import proof_task
from tests.conftest import REPO


@pytest.fixture(scope="module", autouse=True)
def _registry_restored():
    """The test tasks this module registers leave the registry when it ends (other test
    files on the same worker list the known tasks)."""
    before = dict(api.TASKS)
    yield
    api.TASKS.clear()
    api.TASKS.update(before)


LAYOUTS = {
    "one device": {"parallel.devices": 1, "parallel.mesh": "data:1"},
    "data:8": {"parallel.mesh": "data:8"},
    "data:2,fsdp:2,tensor:2": {"parallel.mesh": "data:2,fsdp:2,tensor:2"},
    "pmap": {"parallel.mode": "pmap"},
}


def _losses(workdir) -> list[float]:
    return [r["train/loss"] for r in read_metrics(workdir) if "train/loss" in r]


def _close(a, b, name=""):
    jax.tree_util.tree_map(
        lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=name), a, b
    )


def _final(workdir):
    trained = api.load(workdir)
    return jax.device_get((trained.params, trained.run.state.carry))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each layout trained for 12 steps: (summary, losses, params, carry)."""
    out = {}
    for name, overrides in LAYOUTS.items():
        workdir = tmp_path_factory.mktemp(name.replace(",", "_").replace(" ", "_"))
        summary = api.train(proof_task.config(**overrides), workdir)
        out[name] = (summary, _losses(workdir), *_final(workdir), workdir)
    return out


def test_layouts_train_the_same(runs):
    ref_summary, ref_losses, ref_params, ref_carry, _ = runs["one device"]
    assert len(ref_losses) == 6 and ref_losses[-1] < ref_losses[0] - 0.3  # it learns
    assert 0 < ref_summary["eval/sampled_accuracy"] < 1
    for name, (summary, losses, params, carry, _) in runs.items():
        np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, err_msg=name)
        for key in ("eval/loss", "eval/sampled_accuracy"):
            np.testing.assert_allclose(summary[key], ref_summary[key], rtol=1e-5, err_msg=name)
        _close((params, carry), (ref_params, ref_carry), name)


def test_carry_is_checkpointed_whole_and_continues(runs):
    """The checkpointed carry has every batch row (pmap too: all devices' rows)."""
    _, _, _, carry, _ = runs["pmap"]
    assert carry["h"].shape == (8, 16)
    assert np.all(np.abs(carry["h"]).sum(axis=1) > 0)  # every row carried something


def test_api_evaluate_repeats_the_loops_sampled_evaluation(runs):
    summary, *_, workdir = runs["data:8"]
    numbers = api.load(workdir).evaluate()
    assert numbers["sampled_accuracy"] == pytest.approx(summary["eval/sampled_accuracy"])
    assert numbers["loss"] == pytest.approx(summary["eval/loss"], rel=1e-6)


def _train_killed(workdir, kill_at: int, mesh: str):
    env = {**os.environ, "PROOF_KILL_AT": str(kill_at), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.proof_task", str(workdir), f"--parallel.mesh={mesh}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    return proc


def test_sigkill_resume_is_bitwise_and_reshards(runs, tmp_path):
    killed = tmp_path / "killed"
    # Killed when batch 11 is requested: the loop reads the next dispatch (2 steps) while
    # the device trains, so that is after dispatching steps 9-10, after the step-8
    # checkpoint (at a checkpoint step the save comes before the read).
    _train_killed(killed, kill_at=11, mesh="data:8")
    steps = sorted(int(p.name) for p in (killed / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == 8
    resharded = tmp_path / "resharded"
    shutil.copytree(killed, resharded)
    to_pmap = tmp_path / "to_pmap"
    shutil.copytree(killed, to_pmap)

    api.train(proof_task.config(**LAYOUTS["data:8"]), killed)
    ref_params, ref_carry = runs["data:8"][2:4]
    params, carry = _final(killed)
    jax.tree_util.tree_map(np.testing.assert_array_equal, (params, carry), (ref_params, ref_carry))

    for workdir, layout in ((resharded, "data:2,fsdp:2,tensor:2"), (to_pmap, "pmap")):
        summary = api.train(proof_task.config(**LAYOUTS[layout]), workdir)
        assert summary["start_step"] == 8
        params, carry = _final(workdir)
        _close((params, carry), (ref_params, ref_carry), layout)


# -- the pieces, one by one ---------------------------------------------------------------


def test_sparse_gradients_equal_the_dense_gradient():
    task = proof_task.ProofTask(proof_task.config())
    params = jax.tree_util.tree_map(
        lambda x: x.value if hasattr(x, "value") else x,
        task.init(jax.random.PRNGKey(0))["params"],
        is_leaf=lambda x: hasattr(x, "names"),
    )
    batch = {"tokens": jnp.asarray(next(task.train_iterator())["tokens"])}
    carry = {"h": jnp.zeros((8, 16))}
    index = task.sparse_rows(batch, None)
    sparse_fn = jax.jit(lambda p, c, b: sparse_gradients(task.loss, index, p, c, b, None))
    (loss, _), grads = sparse_fn(params, carry, batch)
    dense_fn = jax.jit(lambda p, c, b: jax.grad(task.loss, has_aux=True)(p, c, b, None, True))
    dense, _ = dense_fn(params, carry, batch)
    rows = grads["embed"]["embedding"]
    assert isinstance(rows, Rows) and rows.values.shape == (8, 6, 16)
    table = jnp.zeros_like(params["embed"]["embedding"]).at[rows.ids.reshape(-1)]
    scattered = table.add(rows.values.reshape(-1, 16))
    np.testing.assert_allclose(scattered, dense["embed"]["embedding"], atol=1e-6)
    np.testing.assert_allclose(grads["mix"]["kernel"], dense["mix"]["kernel"], atol=1e-6)


def test_sparse_rows_refuse_microbatches():
    cfg = proof_task.config(**{"train.microbatches": 2})
    run = api.build_run(cfg)
    with pytest.raises(ConfigError, match="train.microbatches=2.*sparse rows"):
        make_train_step(run.task, run.tx, run.schedule, microbatches=2)


class DenseProofTask(proof_task.ProofTask):
    """The proof task without the sparse hook (embedding updated densely)."""

    sparse_rows = None


def test_microbatches_split_the_carry_like_the_batch():
    api.register_task("proof_dense", DenseProofTask)
    cfg = proof_task.config(**LAYOUTS["one device"])
    cfg = dataclasses.replace(cfg, task="proof_dense")
    results = []
    for k in (1, 2, 4):
        run = api.build_run(cfg)
        step = jax.jit(make_train_step(run.task, run.tx, run.schedule, microbatches=k))
        state = run.state
        it = run.task.train_iterator()
        for _ in range(3):
            state, metrics = step(state, next(it))
        results.append(jax.device_get((state.params, state.carry, metrics["loss"])))
    for other in results[1:]:
        _close(other, results[0])


def test_a_carry_without_a_leading_batch_axis_is_refused():
    class BadCarry(proof_task.ProofTask):
        def init_carry(self):
            return {"h": carry_leaf(jnp.zeros((8, 16))), "stats": {"seen": jnp.zeros((3,))}}

    with pytest.raises(ConfigError, match=r"carry leaf init_carry\(\)\['stats'\]\['seen'\]"):
        api.register_task("proof_bad_carry", BadCarry)
        cfg = dataclasses.replace(proof_task.config(), task="proof_bad_carry")
        api.build_run(cfg)


def test_loss_average_threads_the_carry_and_uses_the_key():
    task = proof_task.ProofTask(proof_task.config())
    run = api.build_run(proof_task.config())
    batches = task.eval_batches()
    average = make_loss_average(task)
    a = average(run.state.params, batches, jax.random.PRNGKey(0))
    # By hand: the carry continues from batch to batch.
    carry, total = {"h": jnp.zeros((8, 16))}, 0.0
    for i in range(3):
        batch = {"tokens": batches["tokens"][i]}
        view = traverse_util.unflatten_dict(
            {
                **traverse_util.flatten_dict(run.state.params, sep="/"),
                "embed/embedding": Rows(
                    batch["tokens"][:, :-1],
                    run.state.params["embed"]["embedding"][batch["tokens"][:, :-1]],
                ),
            },
            sep="/",
        )
        loss, (_, carry) = task.loss(view, carry, batch, None, False)
        total += float(loss)
    assert float(a["loss"]) == pytest.approx(total / 3, rel=1e-6)


# -- variable batch shapes -----------------------------------------------------------------


class _Trimmed:
    """Batches cut to lengths cycling through ``lengths`` (three shapes, mixed order)."""

    def __init__(self, it, lengths):
        self.it, self.lengths, self.count = it, lengths, 0

    def __next__(self):
        batch = next(self.it)
        length = self.lengths[self.count % len(self.lengths)]
        self.count += 1
        return {"tokens": batch["tokens"][:, :length]}

    def get_state(self):
        return self.it.get_state()

    def set_state(self, state):
        self.it.set_state(state)


LENGTHS = (7, 7, 7, 7, 5, 3, 3, 5, 7, 3, 5, 5)


class BucketedProofTask(proof_task.ProofTask):
    def train_iterator(self):
        return _Trimmed(super().train_iterator(), LENGTHS)


def test_varying_batch_shapes_compile_once_per_shape(tmp_path, monkeypatch):
    api.register_task("proof_buckets", BucketedProofTask)
    compiled = []
    original = parallel.compile_steps

    def recording(*args, **kwargs):
        compiled.append(original(*args, **kwargs))
        return compiled[-1]

    monkeypatch.setattr(loop_lib.parallel, "compile_steps", recording)
    results = {}
    for k in (4, 1):
        overrides = {**LAYOUTS["one device"], "train.steps_per_dispatch": k, "train.log_every": 4}
        cfg = dataclasses.replace(proof_task.config(**overrides), task="proof_buckets")
        compiled.clear()
        api.train(cfg, tmp_path / f"k{k}")
        results[k] = (_losses(tmp_path / f"k{k}"), *_final(tmp_path / f"k{k}"))
        if k == 4:
            plain, masked = compiled
            assert plain._cache_size() == 1  # the first dispatch, before a second shape
            assert masked._cache_size() == len(set(LENGTHS))  # then one program per shape
    np.testing.assert_allclose(results[4][0], results[1][0], rtol=1e-5)
    _close(results[4][1:], results[1][1:])


def test_equal_shape_runs_keep_the_order():
    batches = [{"x": np.zeros((2, n))} for n in (3, 3, 5, 3)]
    runs = loop_lib.equal_shape_runs(batches)
    assert [len(r) for r in runs] == [2, 1, 1]
    assert [r[0]["x"].shape[1] for r in runs] == [3, 5, 3]


def test_xla_scan_needs_the_carry_constraint():
    """An RNN scan with its weight sharded (fsdp, tensor) and the batch split over
    data x fsdp: with the carried state constrained to the batch layout at every step the
    gradient equals the one-device gradient. (Without the constraint, jax 0.10.2 on CPU
    returned a gradient off by about 4 here; see README, "Writing a task".)"""
    import flax.linen as nn
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    placement = parallel.build_placement(
        proof_task.config(**LAYOUTS["data:2,fsdp:2,tensor:2"]).parallel
    )
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    w = jax.random.normal(keys[0], (16, 16)) / 4
    x = jax.random.normal(keys[1], (8, 6, 16))

    def loss(w, x):
        def step(h, xt):
            h = nn.with_logical_constraint(jnp.tanh(xt + h @ w), ("act_batch", None))
            return h, h

        _, hs = jax.lax.scan(step, jnp.zeros((8, 16)), x.swapaxes(0, 1))
        return jnp.sum(hs**2)

    expected = jax.grad(loss)(w, x)
    mesh = placement.mesh
    with placement.context():
        w_sharded = jax.device_put(w, NamedSharding(mesh, P("fsdp", "tensor")))
        x_sharded = jax.device_put(x, NamedSharding(mesh, P(("data", "fsdp"))))
        got = jax.jit(jax.grad(loss))(w_sharded, x_sharded)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_cli_eval_prints_a_tasks_own_evaluation(runs, capsys, monkeypatch):
    from nlpjax import cli

    summary, *_, workdir = runs["one device"]
    calls = []
    evaluate = proof_task.ProofTask.evaluate
    monkeypatch.setattr(
        proof_task.ProofTask, "evaluate", lambda *a, **k: calls.append(1) or evaluate(*a, **k)
    )
    assert cli.main(["eval", f"--workdir={workdir}"]) == 0
    assert len(calls) == 1  # a task's own evaluation (whole-split decoding) runs once
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "step 12, split validation"
    sampled = float(out[2].split()[1])
    assert out[2].startswith("eval/sampled_accuracy") and sampled == pytest.approx(
        summary["eval/sampled_accuracy"], abs=1e-6
    )
    assert out[-1].startswith("eval seconds ")


def test_generate_refuses_a_task_without_a_generator(runs, capsys):
    from nlpjax import cli

    *_, workdir = runs["one device"]
    assert cli.main(["generate", f"--workdir={workdir}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: the 'proof' task has no text generator (nlpjax generate and "
        "Trained.generate serve tasks that define generator(params, sampling))"
    ]


class WeightedProofTask(proof_task.ProofTask):
    """The proof task with a loss weight per target (devices count different tokens)."""

    def loss(self, params, carry, batch, rng, train):
        tokens = batch["tokens"]
        logits, carry = self.logits(params, carry, tokens)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
        weights = (tokens[:, 1:] % 3 != 0).astype(jnp.float32)
        total = jnp.sum(weights)
        return jnp.sum(losses * weights) / total, ({"weight": total}, carry)


def test_pmap_weights_each_device_by_its_tokens(tmp_path):
    api.register_task("proof_weighted", WeightedProofTask)
    losses = {}
    for name in ("one device", "pmap"):
        overrides = {**LAYOUTS[name], "train.steps": 6}
        cfg = dataclasses.replace(proof_task.config(**overrides), task="proof_weighted")
        workdir = tmp_path / name.replace(" ", "_")
        api.train(cfg, workdir)
        losses[name] = (_losses(workdir), *_final(workdir))
    _close(losses["pmap"], losses["one device"], "pmap")
