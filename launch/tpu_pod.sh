#!/usr/bin/env bash
# Run one omni-rrm command on every worker of a Cloud TPU VM (single host or pod slice).
#
#   launch/tpu_pod.sh create  NAME ZONE ACCELERATOR [VERSION]   # e.g. v5litepod-16
#   launch/tpu_pod.sh install NAME ZONE                         # copy this repo, pip install .[tpu]
#   launch/tpu_pod.sh run     NAME ZONE -- --config=configs/rm.py:7b --workdir=gs://BUCKET/run1
#   launch/tpu_pod.sh delete  NAME ZONE
#
# `run` starts the SAME command on all workers with --distributed, so that
# jax.distributed.initialize() finds the pod; the workdir must be shared storage
# (a gs:// bucket) for checkpoints to be visible to every host.
set -euo pipefail

cmd=${1:?usage: $0 create|install|run|delete NAME ZONE ...}
name=${2:?TPU name}
zone=${3:?zone}
shift 3

ssh_all() {
  gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all --command "$1"
}

case "$cmd" in
  create)
    accelerator=${1:?accelerator type, e.g. v5litepod-16}
    version=${2:-v2-alpha-tpuv5-lite}
    gcloud compute tpus tpu-vm create "$name" --zone "$zone" \
      --accelerator-type "$accelerator" --version "$version"
    ;;
  install)
    root=$(cd "$(dirname "$0")/.." && pwd)
    archive=$(mktemp -d)/omni-rrm-jax.tar.gz
    tar -C "$root" --exclude=.git --exclude='*.egg-info' -czf "$archive" .
    gcloud compute tpus tpu-vm scp "$archive" "$name":~/omni-rrm-jax.tar.gz --zone "$zone" --worker=all
    ssh_all "mkdir -p ~/omni-rrm-jax && tar -xzf ~/omni-rrm-jax.tar.gz -C ~/omni-rrm-jax \
      && python3 -m venv ~/venv && ~/venv/bin/pip install -q -e ~/omni-rrm-jax'[tpu]'"
    ;;
  run)
    [ "${1:-}" = "--" ] && shift
    args=$(printf '%q ' "$@")
    ssh_all "cd ~/omni-rrm-jax && ~/venv/bin/omni-rrm --distributed $args"
    ;;
  delete)
    gcloud compute tpus tpu-vm delete "$name" --zone "$zone" --quiet
    ;;
  *)
    echo "unknown command $cmd (create|install|run|delete)" >&2
    exit 2
    ;;
esac
