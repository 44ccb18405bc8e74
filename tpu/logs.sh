#!/usr/bin/env bash
# Stream the training log of a worker (default: worker 0, the one that logs metrics).
# Usage: tpu/logs.sh --name NAME --zone ZONE [--worker N]
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
WORKER=0
parse_args "$@"
ssh_workers "$WORKER" "tail -n 200 -F ~/nlpjax-train.log"
