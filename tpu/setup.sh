#!/usr/bin/env bash
# Install nlpjax (with jax[tpu], and gcsfs for gs:// workdirs) on every worker.
# By default the local checkout (git HEAD) is uploaded; --repo URL [--ref REF] clones instead.
# Usage: tpu/setup.sh --name NAME --zone ZONE [--repo URL --ref REF]
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
REPO_URL=""
parse_args "$@"
pflag="$(project_flag)"
if [[ -z "$REPO_URL" ]]; then
  archive="${TMPDIR:-/tmp}/nlpjax-src.tar.gz"
  run git -C "$(dirname "$0")/.." archive --format=tar.gz -o "$archive" HEAD
  run gcloud compute tpus tpu-vm scp "$archive" "$NAME:~/nlpjax-src.tar.gz" \
    --zone="$ZONE" ${pflag:+"$pflag"} --worker=all
  fetch="rm -rf ~/nlpjax && mkdir -p ~/nlpjax && tar xzf ~/nlpjax-src.tar.gz -C ~/nlpjax"
else
  fetch="rm -rf ~/nlpjax && git clone --quiet $REPO_URL ~/nlpjax && git -C ~/nlpjax checkout --quiet $REF"
fi
# These run on the workers, whose shell expands the tildes.
# shellcheck disable=SC2088
steps=(
  "set -e"
  "$fetch"
  "cd ~/nlpjax"
  "python3 -m pip install --quiet --user uv"
  "~/.local/bin/uv venv --quiet --python 3.11 .venv"
  "~/.local/bin/uv pip install --quiet --python .venv/bin/python -e . 'jax[tpu]' gcsfs google-cloud-storage"
  ".venv/bin/python -c 'import jax; print(jax.process_index(), jax.device_count())'"
)
remote="$(printf '%s; ' "${steps[@]}")"
ssh_workers all "${remote%; }"
