# Shared by the launch scripts (sourced): dry-run, usage errors, the workdir rule.

dry_run=

# One-line message, exit 2: a wrong invocation, never a failed cloud call.
fail() {
  echo "$(basename "$0"): $*" >&2
  exit 2
}

# Shell words that can be pasted back into bash: plain words as is, the rest single-quoted.
quote() {
  local out=() w
  for w in "$@"; do
    if [[ $w =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
      out+=("$w")
    elif [[ $w == *$'\n'* ]]; then
      out+=("$(printf %q "$w")")  # keeps the call on one line
    else
      out+=("'${w//\'/\'\\\'\'}'")
    fi
  done
  echo "${out[*]}"
}

# The only way the scripts reach the cloud, so that --dry-run covers every call.
run() {
  if [ -n "$dry_run" ]; then quote "$@"; else "$@"; fi
}

# Every host reads and writes the same checkpoints, so a local directory would
# leave each host with its own partial run.
require_shared_workdir() {
  local a prev= workdir=
  for a in "$@"; do
    [ "$prev" = --workdir ] && workdir=$a
    case $a in --workdir=*) workdir=${a#--workdir=} ;; esac
    prev=$a
  done
  [[ $workdir == gs://?* ]] ||
    fail "the workdir must be shared storage every host sees: --workdir=gs://BUCKET/PATH (got '${workdir:-nothing}')"
}
