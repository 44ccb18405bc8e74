"""Two processes on localhost (4 CPU devices each) train, get killed, resume, and match
the single-process 8-device run; each host reads a disjoint half of every batch; process 1
writes nothing in the workdir but its checkpoint shards."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nlpjax.api import train as train_and_evaluate
from nlpjax.data import pipeline
from nlpjax.training.metrics import read_metrics
from tests.conftest import REPO, TINY

FLAGS = {
    "data.batch_size": 8, "train.steps": 30, "train.steps_per_dispatch": 1,
    "train.log_every": 1, "checkpoint.every": 10, "checkpoint.max_to_keep": 10,
    "eval.every": 10, "train.progress": "false", "parallel.devices": 0,
    "parallel.mesh": "data:2,fsdp:4",
}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch(workdir: Path) -> list[subprocess.Popen]:
    """Starts processes 0 and 1; process 1 records its writes in ``<workdir>-p1-writes``."""
    port = _free_port()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    audit = workdir.parent / f"{workdir.name}-p1-writes"
    procs = []
    for pid in range(2):
        entry = ["nlpjax.cli"] if pid == 0 else ["tests.multihost_audit", str(audit), str(workdir)]
        cmd = [
            sys.executable, "-m", *entry, "train", f"--config={TINY}",
            f"--workdir={workdir}", f"--coordinator_address=localhost:{port}",
            "--num_processes=2", f"--process_id={pid}",
            *[f"--config.{k}={v}" for k, v in FLAGS.items()],
        ]  # fmt: skip
        log = open(workdir.parent / f"{workdir.name}-p{pid}.log", "a")  # noqa: SIM115
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log))
    return procs


def _losses(workdir):
    return {r["step"]: r["train/loss"] for r in read_metrics(workdir) if "train/loss" in r}


def test_host_shards_are_disjoint_and_cover_the_batch():
    tokens = np.arange(5000, dtype=np.int32)
    whole = pipeline.lm_windows(tokens, 9, 8, seed=1)
    halves = [pipeline.lm_windows(tokens, 9, 8, 1, pipeline.Shard(i, 2)) for i in range(2)]
    for b in range(20):
        rows = [tuple(r) for h in halves for r in h[b]["tokens"]]
        assert (
            len(set(map(tuple, halves[0][b]["tokens"])) & set(map(tuple, halves[1][b]["tokens"])))
            == 0
        )
        assert sorted(rows) == sorted(tuple(r) for r in whole[b]["tokens"])


# Slow (about 50 s of make test's 10-minute budget): make test-all runs it. make test
# keeps the host sharding (above) and single-process kill/resume (test_resume.py,
# test_task_v2.py, test_cli.py).
@pytest.mark.slow
def test_two_processes_kill_resume_match_single_process(tiny_config, tmp_path):
    reference = tmp_path / "single"
    overrides = {k.replace(".", "__"): v for k, v in FLAGS.items()}
    train_and_evaluate(tiny_config(**overrides), reference)  # 8 devices, one process

    workdir = tmp_path / "multi"
    workdir.mkdir()
    procs = _launch(workdir)
    ckpts = workdir / "checkpoints"
    deadline = time.time() + 300
    while not (ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir())):
        assert time.time() < deadline, "no checkpoint from the two-process run"
        assert all(p.poll() is None for p in procs), (tmp_path / "multi-p0.log").read_text()
        time.sleep(0.05)
    for p in procs:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert all(p.returncode == -signal.SIGKILL for p in procs)

    procs = _launch(workdir)
    for p in procs:
        assert p.wait(timeout=300) == 0, (tmp_path / "multi-p0.log").read_text()
    assert "Resumed from step" in (tmp_path / "multi-p0.log").read_text()
    rows = [r["step"] for r in read_metrics(workdir) if "train/loss" in r]
    assert rows == list(range(1, 31))  # one row per step: process 1 wrote none
    audit = tmp_path / "multi-p1-writes"
    lines = audit.read_text().splitlines()
    assert sum(line.startswith("# writes of pid") for line in lines) == 2  # both launches
    written = {line for line in lines if not line.startswith("#")}
    # Every process writes its checkpoint shards, so every process first checks that it can
    # write (the CLI's probe file, created and removed at once); nothing else.
    probes = {w for w in written if w.startswith(".nlpjax-write-test-")}
    assert not {w for w in written - probes if not w.startswith("checkpoints/")}, written
    names = {p.name for p in workdir.iterdir()}
    assert {"metrics.jsonl", "config.json", "config_history.jsonl"} <= names
    assert "train.lock" not in names and not any(n.startswith(".nlpjax-write") for n in names)
    got, want = _losses(workdir), _losses(reference)
    np.testing.assert_allclose([got[s] for s in got], [want[s] for s in got], rtol=1e-5)
