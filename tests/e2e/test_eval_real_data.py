"""`configs/eval.py` end to end on the real preference files in ../shared/data."""

import json
import os

import pytest

from tests.e2e.runs import SHARED_DATA, cli, trained_rm

pytestmark = pytest.mark.skipif(
    not os.path.isdir(SHARED_DATA),
    reason=f"shared data folder {SHARED_DATA} is absent (set OMNI_RRM_SHARED_DATA)")


@pytest.mark.parametrize("source,limit,records", [("llmbar/Natural.json", 0, 100),
                                                  ("hh-rlhf", 48, 48)])
def test_eval_task_reports_real_data(source, limit, records, tmp_path):
  workdir, _ = trained_rm()
  run = cli("eval.py", str(tmp_path), f"--config.model.path={workdir}/hf",
            f"--config.data.path={os.path.join(SHARED_DATA, source)}",
            f"--config.data.limit={limit}", "--config.data.max_length=1024",
            "--config.data.buckets=(256,512,1024)")
  assert run.returncode == 0, run.stderr[-3000:]
  report = json.loads((tmp_path / "eval_report.json").read_text())
  overall = report["overall"]
  assert report["records"] == records and overall["count"] == records
  assert overall["unparseable"] == sum(report["unscored"].values())
  # Real text of real length went through the model: most pairs were scored.
  assert overall["count"] - overall["unparseable"] >= 0.8 * records
  assert 0.0 <= overall["accuracy"] <= overall["accuracy_parsed_only"] <= 1.0
  if source.startswith("llmbar"):
    assert list(report["per_subset"]) == ["Natural"]
