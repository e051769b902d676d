"""LoRA on the text decoder of Qwen2.5-VL and the Qwen2.5-Omni thinker: the encoders
stay untouched, and the merged and PEFT exports reload in transformers / peft."""

import jax
import numpy as np
import pytest

import omni_rrm_jax as orj
from omni_rrm_jax.models import lora, mrope
from omni_rrm_jax.models.hf_save import save_pretrained
from omni_rrm_jax.models.peft_save import save_peft_adapter
from tests.models import test_qwen2_5_omni as omni
from tests.models import test_qwen2_5_vl as vl

# Between two torch models (merged vs base + PEFT adapter): fp32 rounding only.
TORCH_TOL = 1e-5


def _inputs(case):
  """(module, ids, mask, torch kwargs, our kwargs) of a text + image batch."""
  m = vl if case == "vl" else omni
  grid = (1, 8, 12)
  image = (vl.media(vl.IMAGE, grid) if case == "vl" else omni.image(grid))
  ids, mask = m.batch([[1] + m.text(3, 2) + image + m.text(5, 3), [1] + m.text(6, 1)])
  if case == "vl":
    import torch
    pv = vl.patches([grid], 0)
    torch_kw = dict(pixel_values=torch.tensor(pv), image_grid_thw=torch.tensor([grid]),
                    mm_token_type_ids=torch.tensor(mrope.token_types(ids, vl.IMAGE, vl.VIDEO)))
    ours = dict(pixel_values=pv, image_grid_thw=np.array([grid]))
  else:
    torch_kw, host_kw, array_kw = omni.media_kwargs(images=[grid])
    ours = dict(host_kw, **array_kw)
  return m, ids, mask, torch_kw, ours


@pytest.mark.parametrize("case", ["vl", "omni"])
def test_multimodal_lora_exports_reload_with_equal_logits(case, tmp_path):
  import peft
  import torch
  m, ids, mask, torch_kw, ours_kw = _inputs(case)
  src = m.hf_model()[1]
  model = orj.from_pretrained(src)
  paths = lora.apply_lora(model, rank=4, alpha=8.0, seed=3)
  assert paths and all(str(p[0]) not in lora.ENCODERS for p in paths)
  assert len(paths) == 7 * 2  # every linear layer of the 2 text-decoder layers
  for i, (_, layer) in enumerate(sorted(lora.adapted_layers(model).items(), key=str)):
    shape = layer.lora.b.get_value().shape
    layer.lora.b.set_value(0.05 * jax.random.normal(jax.random.key(i), shape))
  ours = np.asarray(model(ids, attention_mask=mask, **ours_kw).logits)
  save_pretrained(model, str(tmp_path / "merged"))
  save_peft_adapter(model, str(tmp_path / "adapter"), base_model_path=src)
  cls = type(m.hf_model()[0])
  with torch.no_grad():
    kw = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), **torch_kw)
    base = m.hf_model()[0](**kw).logits.numpy()
    merged = cls.from_pretrained(str(tmp_path / "merged")).eval()(**kw).logits.numpy()
    peft_model = peft.PeftModel.from_pretrained(cls.from_pretrained(src).eval(),
                                                str(tmp_path / "adapter")).eval()
    adapted = peft_model(**kw).logits.numpy()
  valid = mask.astype(bool)
  # The adapters move the logits far more than the model-to-transformers tolerance.
  assert np.abs(merged - base)[valid].max() > 100 * m.TOL
  np.testing.assert_allclose(adapted[valid], merged[valid], atol=TORCH_TOL, rtol=0)
  np.testing.assert_allclose(ours[valid], merged[valid], atol=m.TOL, rtol=0)
  # PEFT adapted exactly the text decoder's layers: none of the encoders'.
  adapted_names = [n for n, _ in peft_model.named_modules() if n.endswith(".lora_A")]
  assert len(adapted_names) == len(paths)
  assert not any("visual" in n or "audio_tower" in n for n in adapted_names)
