#!/usr/bin/env bash
# Launch `nlpjax train` on all workers (jax.distributed initializes itself on TPU).
# The same command after a preemption resumes from the latest checkpoint in --workdir.
# Usage: tpu/launch.sh --name NAME --zone ZONE --config FILE --workdir gs://B/run
#                      [--data_dir gs://B/tfds] [-- --config.train.steps=...]
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
parse_args "$@"
if [[ -z "$WORKDIR" ]]; then
  echo "error: --workdir is required (use a gs:// path shared by all workers)" >&2
  exit 2
fi
env_vars="NLPJAX_OFFLINE=0"
if [[ -n "$DATA_DIR" ]]; then
  env_vars="$env_vars TFDS_DATA_DIR=$DATA_DIR"
fi
if [[ -n "$RAW_DATA_DIR" ]]; then
  env_vars="$env_vars NLPJAX_DATA_DIR=$RAW_DATA_DIR"
fi
extra=""
if [[ ${#EXTRA[@]} -gt 0 ]]; then
  extra="$(printf '%q ' "${EXTRA[@]}")"
fi
train="$env_vars .venv/bin/nlpjax train --distributed --config=$CONFIG --workdir=$WORKDIR $extra"
ssh_workers "$WORKER" "cd ~/nlpjax && nohup env $train > ~/nlpjax-train.log 2>&1 &"
