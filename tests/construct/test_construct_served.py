"""`construct` against real `omni-rrm serve` instances on 127.0.0.1: the
OpenAI-compatible requests it sends (text and inline images) are accepted and
answered, and every prompt is accounted for.

Two tiny random Qwen2.5-VL causal LMs (different seeds) answer as the strong
and the weak model; the first also serves as both teachers. A random judge
writes no valid judgment, so every pair with two different answers ends as
"unparsable judgment": the test checks the wiring and the bookkeeping, the
fake-server tests check what is kept.
"""

from __future__ import annotations

import json

import pytest

from omni_rrm_jax.assembly import models as model_lib
from omni_rrm_jax.config.tasks import TASK_CONFIGS
from omni_rrm_jax.construct import pipeline
from omni_rrm_jax.models.hf_save import save_pretrained
from omni_rrm_jax.synthetic.corpus import corpus
from omni_rrm_jax.synthetic.mixture import mixed_pairs
from tests.e2e.runs import load_config
from tests.serve.server_process import running_server


def _lm(root, records, seed):
  config = TASK_CONFIGS["sft"]()
  config.model.architecture = "Qwen2_5_VLForConditionalGeneration"
  config.model.config.initializer_range = config.model.vision.initializer_range = 0.5
  tok, tok_dir = model_lib.tokenizer_for(config.tokenizer, "", str(root), corpus(records))
  model = model_lib.build_model(config.model, tok, None, (), classifier=False, seed=seed)
  return save_pretrained(model, str(root / f"hf{seed}"), tokenizer_dir=tok_dir)


@pytest.mark.slow
def test_construct_runs_against_served_models(tmp_path):
  media_root = tmp_path / "media"
  records = (mixed_pairs(2, 0, ("image",), media_root=str(media_root))
             + mixed_pairs(2, 0, ("colour",)))
  with open(tmp_path / "prompts.jsonl", "w", encoding="utf-8") as f:
    for r in records:
      f.write(json.dumps({"id": r.id, "prompt": r.prompt, "media": r.media}) + "\n")
  strong, weak = _lm(tmp_path, records, 1), _lm(tmp_path, records, 2)
  serve = {"serve.media_root": str(media_root)}
  with running_server(tmp_path / "s1", {"model.path": strong, **serve}) as (url_1, _), \
       running_server(tmp_path / "s2", {"model.path": weak, **serve}) as (url_2, _):
    overrides = {"construct.prompts_path": str(tmp_path / "prompts.jsonl"),
                 "data.media_root": str(media_root)}
    for name, url in (("strong", url_1), ("weak", url_2), ("teacher_1", url_1),
                      ("teacher_2", url_1)):
      overrides.update({f"construct.{name}.url": f"{url}/v1", f"construct.{name}.model": name,
                        f"construct.{name}.max_tokens": 32, f"construct.{name}.max_retries": 0})
    out = pipeline.run(load_config("construct", "", **overrides), str(tmp_path / "w"))
  assert out["failed"] == {}, out
  assert out["prompts"]["usable"] == 4
  assert out["kept"] + sum(out["dropped"].values()) == 4
  pairs = 4 - out["dropped"].get("identical responses", 0)
  assert pairs > 0  # two different random models answer differently
  assert out["endpoints"]["strong"] == {"requests": 4}
  assert out["endpoints"]["teacher_1"] == {"requests": 2 * pairs}
  assert out["endpoints"]["teacher_2"] == {"requests": 2 * pairs}
