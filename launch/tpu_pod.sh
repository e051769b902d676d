#!/usr/bin/env bash
# Run one omni-rrm command on every worker of a Cloud TPU VM (single host or pod slice).
#
#   launch/tpu_pod.sh create  NAME ZONE ACCELERATOR [VERSION]   # e.g. v5litepod-16
#   launch/tpu_pod.sh install NAME ZONE                         # copy this repo, pip install .[tpu]
#   launch/tpu_pod.sh run     NAME ZONE -- --config=configs/rm.py:7b --workdir=gs://BUCKET/run1
#   launch/tpu_pod.sh delete  NAME ZONE
#
# `--dry-run` as the first argument prints every gcloud call, shell-quoted, one per line,
# instead of running it:  launch/tpu_pod.sh --dry-run run NAME ZONE -- ...
#
# `run` starts the SAME command on all workers (--worker=all) with --distributed, so that
# jax.distributed.initialize() finds the pod from the TPU VM's metadata; the workdir must
# be shared storage (gs://) for checkpoints to be visible to every host.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

usage() {
  echo "usage: $0 [--dry-run] create NAME ZONE ACCELERATOR [VERSION] | install NAME ZONE | run NAME ZONE -- OMNI_RRM_ARGS... | delete NAME ZONE" >&2
  exit 2
}
if [ "${1:-}" = --dry-run ]; then dry_run=1; shift; fi
[ $# -ge 3 ] || usage
cmd=$1 name=$2 zone=$3
shift 3
# A misplaced --dry-run must not become a TPU name and run for real.
[[ $name != -* && $zone != -* ]] || usage

ssh_all() {
  run gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all --command "$1"
}

case "$cmd" in
  create)
    [ $# -ge 1 ] && [ $# -le 2 ] || usage
    run gcloud compute tpus tpu-vm create "$name" --zone "$zone" \
      --accelerator-type "$1" --version "${2:-v2-alpha-tpuv5-lite}"
    ;;
  install)
    [ $# -eq 0 ] || usage
    root=$(cd "$(dirname "$0")/.." && pwd)
    # A dry run creates nothing, not even the temporary directory.
    if [ -n "$dry_run" ]; then archive=/tmp/omni-rrm-jax.tar.gz; else archive=$(mktemp -d)/omni-rrm-jax.tar.gz; fi
    run tar -C "$root" --exclude=.git --exclude='*.egg-info' -czf "$archive" .
    run gcloud compute tpus tpu-vm scp "$archive" "$name":~/omni-rrm-jax.tar.gz --zone "$zone" --worker=all
    unpack="mkdir -p ~/omni-rrm-jax && tar -xzf ~/omni-rrm-jax.tar.gz -C ~/omni-rrm-jax"
    ssh_all "$unpack && python3 -m venv ~/venv && ~/venv/bin/pip install -q -e ~/omni-rrm-jax'[tpu]'"
    ;;
  run)
    [ "${1:-}" = -- ] && shift
    [ $# -ge 1 ] || usage
    require_shared_workdir "$@"
    # --distributed goes last: `omni-rrm demo ...` must keep `demo` as its first argument.
    ssh_all "cd ~/omni-rrm-jax && ~/venv/bin/omni-rrm $(quote "$@") --distributed"
    ;;
  delete)
    [ $# -eq 0 ] || usage
    run gcloud compute tpus tpu-vm delete "$name" --zone "$zone" --quiet
    ;;
  *)
    usage
    ;;
esac
