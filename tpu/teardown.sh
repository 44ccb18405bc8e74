#!/usr/bin/env bash
# Delete the TPU and its queued resource. Checkpoints in the gs:// workdir are kept.
# Usage: tpu/teardown.sh --name NAME --zone ZONE
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
parse_args "$@"
pflag="$(project_flag)"
run gcloud compute tpus queued-resources delete "$NAME" --zone="$ZONE" \
  ${pflag:+"$pflag"} --force --quiet
