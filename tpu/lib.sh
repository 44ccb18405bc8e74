#!/usr/bin/env bash
# Variables set here are read by the scripts that source this file.
# shellcheck disable=SC2034
# Shared flag parsing and command runner for the Cloud TPU scripts in this folder.
# Every gcloud call goes through `run`, which only prints it under --dry-run.

set -euo pipefail

NAME="${NLPJAX_TPU_NAME:-nlpjax}"
ZONE="${NLPJAX_TPU_ZONE:-us-central2-b}"
PROJECT="${NLPJAX_TPU_PROJECT:-}"
TYPE="v4-8"
RUNTIME=""
SPOT=0
DRY_RUN=0
REPO_URL="${NLPJAX_REPO_URL:-https://github.com/nlpjax/nlpjax.git}"
REF="main"
CONFIG="experiments/shakespeare_char.py"
WORKDIR=""
DATA_DIR=""
RAW_DATA_DIR=""
WORKER="all"
EXTRA=()

usage() {
  cat <<USAGE
Options (all scripts; each uses the ones it needs):
  --name NAME            TPU / queued-resource name          (default: $NAME)
  --zone ZONE            zone                                 (default: $ZONE)
  --project PROJECT      GCP project                          (default: gcloud's)
  --type TYPE            accelerator type, e.g. v4-8, v5litepod-16 (default: $TYPE)
  --runtime VERSION      TPU VM runtime (default: chosen from --type)
  --spot                 spot (preemptible) capacity
  --repo URL --ref REF   where setup.sh installs nlpjax from (default: $REF)
  --config FILE[:VAR]    experiment config for launch.sh
  --workdir gs://...     run directory (checkpoints, metrics) for launch.sh
  --data_dir gs://...    TFDS data_dir (prepared datasets) for launch.sh
  --raw_data_dir PATH    NLPJAX_DATA_DIR (raw corpora) for launch.sh
  --worker all|N         which workers logs.sh reads (default: all for launch, 0 for logs)
  --dry-run              print every gcloud command instead of running it
  -- ARGS...             extra arguments for nlpjax train (e.g. --config.optim.lr=3e-4)
USAGE
}

parse_args() {
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --name) NAME="$2"; shift 2 ;;
      --zone) ZONE="$2"; shift 2 ;;
      --project) PROJECT="$2"; shift 2 ;;
      --type) TYPE="$2"; shift 2 ;;
      --runtime) RUNTIME="$2"; shift 2 ;;
      --spot) SPOT=1; shift ;;
      --repo) REPO_URL="$2"; shift 2 ;;
      --ref) REF="$2"; shift 2 ;;
      --config) CONFIG="$2"; shift 2 ;;
      --workdir) WORKDIR="$2"; shift 2 ;;
      --data_dir) DATA_DIR="$2"; shift 2 ;;
      --raw_data_dir) RAW_DATA_DIR="$2"; shift 2 ;;
      --worker) WORKER="$2"; shift 2 ;;
      --dry-run) DRY_RUN=1; shift ;;
      -h|--help) usage; exit 0 ;;
      --) shift; EXTRA=("$@"); break ;;
      *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
  done
  if [[ -z "$RUNTIME" ]]; then
    case "$TYPE" in
      v4-*) RUNTIME="tpu-ubuntu2204-base" ;;
      v5litepod-*|v5e-*) RUNTIME="v2-alpha-tpuv5-lite" ;;
      v5p-*) RUNTIME="v2-alpha-tpuv5" ;;
      v6e-*) RUNTIME="v2-alpha-tpuv6e" ;;
      *) RUNTIME="tpu-ubuntu2204-base" ;;
    esac
  fi
}

project_flag() {
  if [[ -n "$PROJECT" ]]; then
    printf -- '--project=%s' "$PROJECT"
  fi
}

# quote ARG: ARG as the shell would need it, single-quoted when it has special characters.
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# run CMD...: print (dry run) or execute a command.
run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    local out="" arg
    for arg in "$@"; do
      out+="$(quote "$arg") "
    done
    printf '%s\n' "${out% }"
  else
    "$@"
  fi
}

# ssh_workers WORKER COMMAND: run a shell command on TPU VM workers.
ssh_workers() {
  local worker="$1" command="$2" pflag
  pflag="$(project_flag)"
  run gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" ${pflag:+"$pflag"} \
    --worker="$worker" --command="$command"
}
