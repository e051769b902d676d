"""launch/tpu_pod.sh and launch/gke.sh against fake gcloud / xpk / tar binaries."""

import json
import os
import pathlib
import shlex
import subprocess
import sys

import pytest
import yaml

LAUNCH = pathlib.Path(__file__).resolve().parents[2] / "launch"
USER_ARGS = ["--config=configs/rm.py:7b", "--workdir=gs://bucket/rm7b",
             "--config.train.num_steps=50", "--config.data.train_path=it's a file.jsonl"]

FAKE = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps([os.path.basename(sys.argv[0])] + sys.argv[1:]) + "\\n")
"""


@pytest.fixture
def sh(tmp_path):
  """Runs a launch script with fake gcloud, xpk and tar first on PATH; returns (proc, calls)."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  for name in ("gcloud", "xpk", "tar"):
    (bin_dir / name).write_text(FAKE)
    (bin_dir / name).chmod(0o755)
  log = tmp_path / "calls.jsonl"
  env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
             FAKE_LOG=str(log), TMPDIR=str(tmp_path))

  def run(script, *args):
    proc = subprocess.run(["bash", str(LAUNCH / script), *args], env=env, capture_output=True,
                          text=True, timeout=10)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    log.unlink(missing_ok=True)
    return proc, calls

  return run


def option(argv, name):
  return argv[argv.index(name) + 1]


def assert_one_line_error(proc, *words):
  assert proc.returncode == 2, proc
  assert proc.stdout == ""
  assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
  for word in words:
    assert word in proc.stderr


# --- Cloud TPU VM ---------------------------------------------------------------------------

@pytest.mark.parametrize("user_args", [
    USER_ARGS,
    ["demo", "--workdir", "gs://bucket/demo"],  # subcommand first, space-separated workdir
])
def test_run_sends_one_command_to_all_workers(sh, user_args):
  proc, calls = sh("tpu_pod.sh", "run", "pod1", "us-central2-b", "--", *user_args)
  assert proc.returncode == 0, proc.stderr
  assert len(calls) == 1
  argv = calls[0]
  assert argv[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]
  assert argv[5] == "pod1" and option(argv, "--zone") == "us-central2-b"
  assert "--worker=all" in argv
  words = shlex.split(option(argv, "--command"))
  assert words[:3] == ["cd", "~/omni-rrm-jax", "&&"]
  assert words[3:] == ["~/venv/bin/omni-rrm", *user_args, "--distributed"]


@pytest.mark.parametrize("workdir_args", [
    ["--workdir=runs/rm7b"], ["--workdir", "/tmp/rm7b"], ["--workdir=gs://"], []])
def test_run_refuses_a_local_workdir(sh, workdir_args):
  proc, calls = sh("tpu_pod.sh", "run", "pod1", "zone", "--", "--config=configs/rm.py", *workdir_args)
  assert_one_line_error(proc, "--workdir=gs://")
  assert calls == []


@pytest.mark.parametrize("args", [
    [], ["run"], ["run", "pod1"], ["run", "pod1", "zone"], ["run", "pod1", "zone", "--"],
    ["create", "pod1", "zone"], ["delete", "pod1", "zone", "extra"], ["install", "pod1", "zone", "x"],
    ["resize", "pod1", "zone"], ["run", "--dry-run", "zone", "--", "--workdir=gs://b/r"],
    ["--dry-run"], ["--dry-run", "run", "pod1"],
])
def test_tpu_pod_usage_errors(sh, args):
  proc, calls = sh("tpu_pod.sh", *args)
  assert_one_line_error(proc, "usage:")
  assert calls == []


@pytest.mark.parametrize("args", [
    ["run", "pod1", "us-central2-b", "--", *USER_ARGS],
    ["create", "pod1", "us-central2-b", "v5litepod-16"],
    ["create", "pod1", "us-central2-b", "v4-32", "tpu-ubuntu2204-base"],
    ["delete", "pod1", "us-central2-b"],
])
def test_tpu_pod_dry_run_prints_the_calls_it_would_make(sh, args):
  dry, dry_calls = sh("tpu_pod.sh", "--dry-run", *args)
  assert dry.returncode == 0, dry.stderr
  assert dry_calls == []
  _, real_calls = sh("tpu_pod.sh", *args)
  assert [shlex.split(line) for line in dry.stdout.splitlines()] == real_calls
  assert len(real_calls) == 1 and real_calls[0][0] == "gcloud"


def test_install_copies_and_installs_on_all_workers(sh):
  dry, dry_calls = sh("tpu_pod.sh", "--dry-run", "install", "pod1", "zone")
  assert dry.returncode == 0 and dry_calls == []
  printed = [shlex.split(line) for line in dry.stdout.splitlines()]
  _, calls = sh("tpu_pod.sh", "install", "pod1", "zone")
  assert [argv[:5] for argv in printed] == [argv[:5] for argv in calls]
  assert [argv[0] for argv in calls] == ["tar", "gcloud", "gcloud"]
  scp, ssh = calls[1:]
  assert scp[4] == "scp" and ssh[4] == "ssh"
  assert "--worker=all" in scp and "--worker=all" in ssh
  assert "pip install" in option(ssh, "--command")


# --- GKE: JobSet ----------------------------------------------------------------------------

def jobset(sh, *args):
  proc, calls = sh("gke.sh", "jobset", "--name=rm7b", "--image=us-docker.pkg.dev/p/r/omni-rrm:1",
                   "--nodes=4", *args, "--", *USER_ARGS)
  assert proc.returncode == 0, proc.stderr
  assert calls == []
  doc = yaml.safe_load(proc.stdout)
  assert doc["apiVersion"] == "jobset.x-k8s.io/v1alpha2" and doc["kind"] == "JobSet"
  assert doc["metadata"]["name"] == "rm7b"
  [workers] = doc["spec"]["replicatedJobs"]  # one pod template: every pod runs the same command
  job = workers["template"]["spec"]
  assert workers["replicas"] == 1 and job["parallelism"] == job["completions"] == 4
  assert job["completionMode"] == "Indexed"
  [container] = job["template"]["spec"]["containers"]
  assert container["image"] == "us-docker.pkg.dev/p/r/omni-rrm:1"
  command = container["command"]
  assert command[:len(USER_ARGS) + 1] == ["omni-rrm", *USER_ARGS]
  return doc, workers, job["template"]["spec"], container, command[len(USER_ARGS) + 1:]


def test_jobset_for_tpu_lets_jax_detect_the_slice(sh):
  doc, _, pod, container, extra = jobset(
      sh, "--tpu-accelerator=tpu-v5-lite-podslice", "--tpu-topology", "4x4", "--chips-per-node=4")
  assert extra == ["--distributed"]
  assert pod["nodeSelector"] == {"cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice",
                                 "cloud.google.com/gke-tpu-topology": "4x4"}
  assert container["resources"]["limits"] == {"google.com/tpu": 4}
  assert doc["metadata"]["annotations"]["alpha.jobset.sigs.k8s.io/exclusive-topology"] == \
      "cloud.google.com/gke-nodepool"


def test_jobset_for_gpu_wires_coordinator_and_process_id(sh):
  doc, workers, _, container, extra = jobset(sh, "--gpus-per-node=8", "--port=8476")
  assert container["resources"]["limits"] == {"nvidia.com/gpu": 8}
  flags = dict(arg.split("=", 1) for arg in extra)
  assert set(flags) == {"--coordinator_address", "--num_processes", "--process_id"}
  # Pod 0 of job 0 on the JobSet's headless service.
  network = doc["spec"]["network"]
  assert network["enableDNSHostnames"] is True
  assert flags["--coordinator_address"] == f"rm7b-{workers['name']}-0-0.{network['subdomain']}:8476"
  assert network["subdomain"] == "rm7b"
  assert flags["--num_processes"] == "4"
  # Kubernetes expands $(VAR) in a command from the container's env.
  assert flags["--process_id"] == "$(JOB_COMPLETION_INDEX)"
  [env] = [e for e in container["env"] if e["name"] == "JOB_COMPLETION_INDEX"]
  assert env["valueFrom"]["fieldRef"]["fieldPath"] == \
      "metadata.annotations['batch.kubernetes.io/job-completion-index']"
  assert container["ports"] == [{"containerPort": 8476}]


@pytest.mark.parametrize("args,words", [
    (["--name=rm7b", "--image=i", "--nodes=2", "--gpus-per-node=8", "--", "--workdir=runs/x"],
     ["--workdir=gs://"]),
    (["--name=rm7b", "--image=i", "--nodes=2", "--gpus-per-node=8", "--", "--config=c.py"],
     ["--workdir=gs://"]),
    (["--name=RM_7b", "--image=i", "--nodes=2", "--gpus-per-node=8", "--", "--workdir=gs://b/r"],
     ["--name"]),
    (["--name=rm7b", "--image=i", "--nodes=two", "--gpus-per-node=8", "--", "--workdir=gs://b/r"],
     ["two"]),
    (["--name=rm7b", "--image=i", "--nodes=2", "--gpus-per-node=8", "--tpu-topology=4x4", "--",
      "--workdir=gs://b/r"], ["--gpus-per-node"]),
    (["--name=rm7b", "--image=i", "--nodes=2", "--colour=red", "--", "--workdir=gs://b/r"],
     ["--colour"]),
    (["--name=rm7b", "--image=i", "--nodes=2", "--", "--workdir=gs://b/r"], ["usage:"]),
    (["--name=rm7b", "--nodes=2", "--gpus-per-node=8", "--", "--workdir=gs://b/r"], ["usage:"]),
    (["--name=rm7b", "--image=i", "--nodes=2", "--gpus-per-node=8", "--"], ["usage:"]),
    (["--name=rm7b", "--image"], ["usage:"]),
])
def test_jobset_errors(sh, args, words):
  proc, calls = sh("gke.sh", "jobset", *args)
  assert_one_line_error(proc, *words)
  assert calls == []


# --- GKE: xpk -------------------------------------------------------------------------------

XPK_TPU = ["--cluster", "c1", "--workload=rm7b-1", "--tpu-type=v5litepod-16", "--num-slices=2",
           "--docker-image=us-docker.pkg.dev/p/r/omni-rrm:1"]
XPK_GPU = ["--cluster=c1", "--workload=rm7b-1", "--device-type=h100-80gb-8", "--num-nodes=4"]


@pytest.mark.parametrize("xpk_args,extra", [
    (XPK_TPU, ["--distributed"]),
    (XPK_GPU, ["--coordinator_address=$JAX_COORDINATOR_ADDRESS:$JAX_COORDINATOR_PORT",
               "--num_processes=$NNODES", "--process_id=$NODE_RANK"]),
])
def test_xpk_workload_create_runs_the_command(sh, xpk_args, extra):
  proc, calls = sh("gke.sh", "xpk", *xpk_args, "--", *USER_ARGS)
  assert proc.returncode == 0, proc.stderr
  assert len(calls) == 1
  argv = calls[0]
  assert argv[:3] == ["xpk", "workload", "create"]
  assert argv[3:-2] == xpk_args  # xpk's own flags pass through untouched
  assert argv[-2] == "--command"
  assert shlex.split(argv[-1]) == ["omni-rrm", *USER_ARGS, *extra]


@pytest.mark.parametrize("xpk_args", [XPK_TPU, XPK_GPU])
def test_xpk_dry_run_prints_the_call_it_would_make(sh, xpk_args):
  dry, dry_calls = sh("gke.sh", "--dry-run", "xpk", *xpk_args, "--", *USER_ARGS)
  assert dry.returncode == 0, dry.stderr
  assert dry_calls == []
  _, real_calls = sh("gke.sh", "xpk", *xpk_args, "--", *USER_ARGS)
  assert [shlex.split(line) for line in dry.stdout.splitlines()] == real_calls


@pytest.mark.parametrize("args,words", [
    ([*XPK_TPU, "--", "--workdir=runs/x"], ["--workdir=gs://"]),
    ([*XPK_GPU, "--", "--workdir", "/tmp/x"], ["--workdir=gs://"]),
    (["--cluster=c1", "--workload=w", "--", "--workdir=gs://b/r"], ["--tpu-type", "--device-type"]),
    ([*XPK_TPU, "--device-type=h100-80gb-8", "--", "--workdir=gs://b/r"], ["--tpu-type"]),
    ([*XPK_TPU, "--command=python x.py", "--", "--workdir=gs://b/r"], ["--command"]),
    (["--workload=w", "--tpu-type=v4-8", "--", "--workdir=gs://b/r"], ["usage:"]),
    ([*XPK_TPU, "--"], ["usage:"]),
    ([*XPK_TPU], ["usage:"]),
])
def test_xpk_errors(sh, args, words):
  proc, calls = sh("gke.sh", "--dry-run", "xpk", *args)
  assert_one_line_error(proc, *words)
  proc, calls = sh("gke.sh", "xpk", *args)
  assert_one_line_error(proc, *words)
  assert calls == []


@pytest.mark.parametrize("args", [[], ["--dry-run"], ["kubectl"], ["--dry-run", "apply"]])
def test_gke_usage_errors(sh, args):
  proc, calls = sh("gke.sh", *args)
  assert_one_line_error(proc, "usage:")
  assert calls == []


def test_jobset_dry_run_prints_the_same_manifest(sh):
  args = ["jobset", "--name=rm7b", "--image=i", "--nodes=2", "--gpus-per-node=8", "--", *USER_ARGS]
  dry, dry_calls = sh("gke.sh", "--dry-run", *args)
  real, real_calls = sh("gke.sh", *args)
  assert dry.returncode == real.returncode == 0
  assert dry.stdout == real.stdout and dry_calls == real_calls == []
