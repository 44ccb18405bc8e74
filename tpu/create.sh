#!/usr/bin/env bash
# Create a TPU VM or pod slice through a queued resource (optionally spot) and wait
# until it is ACTIVE. Usage: tpu/create.sh --name NAME --zone ZONE --type v4-8 [--spot]
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
parse_args "$@"
pflag="$(project_flag)"
capacity=()
if [[ "$SPOT" == 1 ]]; then
  capacity=(--spot)
fi
run gcloud compute tpus queued-resources create "$NAME" --node-id="$NAME" \
  --zone="$ZONE" ${pflag:+"$pflag"} --accelerator-type="$TYPE" \
  --runtime-version="$RUNTIME" "${capacity[@]}"
if [[ "$DRY_RUN" == 1 ]]; then
  run gcloud compute tpus queued-resources describe "$NAME" --zone="$ZONE" \
    ${pflag:+"$pflag"} --format='value(state.state)'
  exit 0
fi
echo "waiting for $NAME to become ACTIVE..."
while true; do
  state="$(gcloud compute tpus queued-resources describe "$NAME" --zone="$ZONE" \
    ${pflag:+"$pflag"} --format='value(state.state)')"
  echo "  state: $state"
  case "$state" in
    ACTIVE) break ;;
    FAILED|SUSPENDED) echo "error: queued resource $NAME is $state" >&2; exit 1 ;;
  esac
  sleep 30
done
