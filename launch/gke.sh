#!/usr/bin/env bash
# Run one omni-rrm command in every pod of a GKE JobSet: render the manifest, or submit through xpk.
#
#   launch/gke.sh jobset --name=NAME --image=IMAGE --nodes=N \
#       (--tpu-accelerator=tpu-v5-lite-podslice --tpu-topology=4x4 --chips-per-node=4 | --gpus-per-node=8) \
#       [--port=1234] [--max-restarts=0] -- OMNI_RRM_ARGS... | kubectl apply -f -
#   launch/gke.sh xpk --cluster=CLUSTER --workload=NAME \
#       (--tpu-type=v5litepod-16 [--num-slices=2] | --device-type=h100-80gb-8 --num-nodes=N) \
#       [--docker-image=IMAGE --project=P --zone=Z ...any other `xpk workload create` flag] -- OMNI_RRM_ARGS...
#
# IMAGE (--image, or xpk's --docker-image) must have omni-rrm installed (pip install .[tpu] or
# .[cuda]) and this repository's configs/ in its working directory.
# `--dry-run` as the first argument prints the xpk call, shell-quoted, instead of running it
# (`jobset` only ever prints). OMNI_RRM_ARGS need --workdir=gs://...: every pod reads and
# writes the same checkpoints.
#
# TPU: GKE tells each pod its worker id and peers, so omni-rrm gets --distributed alone.
# GPU: nothing tells jax, so the command names the coordinator (pod 0's DNS name on the
# JobSet's headless service; xpk exports it), the process count and the process id (the
# pod's Job completion index).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

usage() {
  echo "usage: $0 [--dry-run] jobset --name=NAME --image=IMAGE --nodes=N (--tpu-accelerator=A --tpu-topology=T --chips-per-node=C | --gpus-per-node=G) [--port=P] [--max-restarts=R] -- OMNI_RRM_ARGS... | xpk --cluster=C --workload=W (--tpu-type=T | --device-type=D) [xpk flags] -- OMNI_RRM_ARGS..." >&2
  exit 2
}

# Single-quoted YAML scalar: no escapes but a doubled quote.
yq() { printf "'%s'" "${1//\'/\'\'}"; }

render_jobset() {
  local name= image= nodes= accelerator= topology= chips= gpus= port=1234 max_restarts=0 opt val
  while [ $# -gt 0 ] && [ "$1" != -- ]; do
    case $1 in
      --*=*) opt=${1%%=*} val=${1#*=}; shift ;;
      --*) [ $# -ge 2 ] || usage; opt=$1 val=$2; shift 2 ;;
      *) usage ;;
    esac
    case $opt in
      --name) name=$val ;;
      --image) image=$val ;;
      --nodes) nodes=$val ;;
      --tpu-accelerator) accelerator=$val ;;
      --tpu-topology) topology=$val ;;
      --chips-per-node) chips=$val ;;
      --gpus-per-node) gpus=$val ;;
      --port) port=$val ;;
      --max-restarts) max_restarts=$val ;;
      *) fail "unknown jobset option $opt" ;;
    esac
  done
  [ "${1:-}" = -- ] && shift
  [ -n "$name" ] && [ -n "$image" ] && [ -n "$nodes" ] && [ $# -ge 1 ] || usage
  # The name is part of every pod's DNS name.
  [[ $name =~ ^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$ ]] || fail "--name must be a lowercase DNS label, got '$name'"
  local n
  for n in "$nodes" "$port" ${chips:+"$chips"} ${gpus:+"$gpus"}; do
    [[ $n =~ ^[1-9][0-9]*$ ]] || fail "expected a positive number, got '$n'"
  done
  [[ $max_restarts =~ ^[0-9]+$ ]] || fail "--max-restarts expects a number, got '$max_restarts'"
  if [ -n "$gpus" ]; then
    [ -z "$accelerator$topology$chips" ] || fail "give either the --tpu-* options or --gpus-per-node"
  else
    [ -n "$accelerator" ] && [ -n "$topology" ] && [ -n "$chips" ] || usage
  fi
  require_shared_workdir "$@"

  local args=(omni-rrm "$@") limit="google.com/tpu: $chips"
  if [ -n "$gpus" ]; then
    limit="nvidia.com/gpu: $gpus"
    args+=("--coordinator_address=$name-workers-0-0.$name:$port" "--num_processes=$nodes"
           '--process_id=$(JOB_COMPLETION_INDEX)')  # expanded by Kubernetes from the env below
  else
    args+=(--distributed)
  fi

  cat <<EOF
apiVersion: jobset.x-k8s.io/v1alpha2
kind: JobSet
metadata:
  name: $name
EOF
  # One slice must not be split across node pools.
  [ -n "$gpus" ] || cat <<EOF
  annotations:
    alpha.jobset.sigs.k8s.io/exclusive-topology: cloud.google.com/gke-nodepool
EOF
  cat <<EOF
spec:
  failurePolicy:
    maxRestarts: $max_restarts  # a restart resumes from the last checkpoint in the workdir
  network:
    enableDNSHostnames: true
    subdomain: $name  # pod i is $name-workers-0-i.$name
  replicatedJobs:
  - name: workers
    replicas: 1
    template:
      spec:
        parallelism: $nodes
        completions: $nodes
        completionMode: Indexed
        backoffLimit: 0
        template:
          spec:
            restartPolicy: Never
EOF
  if [ -z "$gpus" ]; then
    cat <<EOF
            nodeSelector:
              cloud.google.com/gke-tpu-accelerator: $(yq "$accelerator")
              cloud.google.com/gke-tpu-topology: $(yq "$topology")
EOF
  fi
  cat <<EOF
            containers:
            - name: omni-rrm
              image: $(yq "$image")
EOF
  if [ -n "$gpus" ]; then
    cat <<EOF
              env:
              - name: JOB_COMPLETION_INDEX
                valueFrom:
                  fieldRef:
                    fieldPath: metadata.annotations['batch.kubernetes.io/job-completion-index']
              ports:
              - containerPort: $port
EOF
  fi
  echo "              command:"
  local a
  for a in "${args[@]}"; do echo "              - $(yq "$a")"; done
  cat <<EOF
              resources:
                limits:
                  $limit
EOF
}

xpk_create() {
  local xpk_args=() kind= has_cluster= has_workload=
  while [ $# -gt 0 ] && [ "$1" != -- ]; do
    case $1 in
      --cluster|--cluster=*) has_cluster=1 ;;
      --workload|--workload=*) has_workload=1 ;;
      --tpu-type|--tpu-type=*) kind+=tpu ;;
      --device-type|--device-type=*) kind+=gpu ;;
      --command|--command=*) fail "the omni-rrm arguments go after --, not in --command" ;;
    esac
    xpk_args+=("$1")
    shift
  done
  [ "${1:-}" = -- ] && shift
  [ -n "$has_cluster" ] && [ -n "$has_workload" ] && [ $# -ge 1 ] || usage
  [ "$kind" = tpu ] || [ "$kind" = gpu ] || fail "give exactly one of --tpu-type and --device-type"
  require_shared_workdir "$@"

  local command="omni-rrm $(quote "$@")"
  if [ "$kind" = gpu ]; then
    # xpk exports these in every GPU pod; the pod's shell expands them.
    command+=' --coordinator_address=$JAX_COORDINATOR_ADDRESS:$JAX_COORDINATOR_PORT'
    command+=' --num_processes=$NNODES --process_id=$NODE_RANK'
  else
    command+=' --distributed'
  fi
  run xpk workload create "${xpk_args[@]}" --command "$command"
}

if [ "${1:-}" = --dry-run ]; then dry_run=1; shift; fi
case "${1:-}" in
  jobset) shift; render_jobset "$@" ;;
  xpk) shift; xpk_create "$@" ;;
  *) usage ;;
esac
