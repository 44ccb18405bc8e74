"""The Cloud TPU scripts: dry runs print the expected gcloud commands; shellcheck passes."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

TPU = REPO / "tpu"


def _dry(script: str, *args: str) -> list[str]:
    done = subprocess.run(
        ["bash", str(TPU / script), "--dry-run", *args], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()


def test_create_spot_pod_slice():
    lines = _dry("create.sh", "--name", "pod", "--zone", "us-east5-a", "--type", "v5litepod-16",
                 "--spot", "--project", "proj")  # fmt: skip
    create = lines[0]
    assert create.startswith("gcloud compute tpus queued-resources create pod ")
    for flag in ("--node-id=pod", "--zone=us-east5-a", "--accelerator-type=v5litepod-16",
                 "--runtime-version=v2-alpha-tpuv5-lite", "--spot", "--project=proj"):  # fmt: skip
        assert flag in create.split()
    assert "--spot" not in _dry("create.sh", "--type", "v4-8")[0]
    assert "--runtime-version=tpu-ubuntu2204-base" in _dry("create.sh", "--type", "v4-8")[0]


def test_setup_installs_on_every_worker():
    archive, scp, ssh = _dry("setup.sh", "--name", "tpu1")  # uploads the local checkout
    assert archive.startswith("git -C") and "archive" in archive and archive.endswith("HEAD")
    assert scp.startswith("gcloud compute tpus tpu-vm scp") and "--worker=all" in scp
    assert ssh.startswith("gcloud compute tpus tpu-vm ssh tpu1 ") and "--worker=all" in ssh
    assert "tar xzf" in ssh and "jax[tpu]" in ssh and "gcsfs" in ssh and "pip install" in ssh
    (clone,) = _dry("setup.sh", "--name", "tpu1", "--repo", "https://x/y.git", "--ref", "v0.1")
    assert "git clone --quiet https://x/y.git" in clone and "checkout --quiet v0.1" in clone


def test_launch_runs_train_on_all_workers_with_gcs_paths():
    (line,) = _dry("launch.sh", "--name", "tpu1", "--config", "experiments/x.py:big",
                   "--workdir", "gs://bucket/run1", "--data_dir", "gs://bucket/tfds",
                   "--", "--config.optim.lr=3e-4")  # fmt: skip
    assert "--worker=all" in line
    for part in ("nlpjax train --distributed", "--config=experiments/x.py:big",
                 "--workdir=gs://bucket/run1", "TFDS_DATA_DIR=gs://bucket/tfds",
                 "--config.optim.lr=3e-4", "nohup"):  # fmt: skip
        assert part in line


def test_launch_requires_a_workdir_and_rejects_unknown_flags():
    done = subprocess.run(["bash", str(TPU / "launch.sh"), "--dry-run"], capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 2 and "--workdir is required" in done.stderr
    done = subprocess.run(["bash", str(TPU / "create.sh"), "--typo"], capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 2 and "unknown option --typo" in done.stderr


def test_logs_and_teardown():
    (logs,) = _dry("logs.sh", "--name", "tpu1")
    assert "--worker=0" in logs and "tail" in logs
    (down,) = _dry("teardown.sh", "--name", "tpu1", "--zone", "europe-west4-a")
    assert down.startswith("gcloud compute tpus queued-resources delete tpu1")
    assert "--zone=europe-west4-a" in down and "--force" in down


def test_shellcheck_passes():
    exe = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    if not Path(exe).exists():
        pytest.fail("shellcheck is missing: install the test extra (pip install -e '.[test]')")
    scripts = sorted(str(p) for p in TPU.glob("*.sh"))
    done = subprocess.run([exe, "-x", "-P", "SCRIPTDIR", *scripts], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
