"""Real tokens per token slot of RM and SFT batches, padded to buckets vs packed.

  python benchmarks/packing_density.py [--pairs 512] [--media-pairs 128]

Encodes the demo's generated pairs (`synthetic.omni.generate_omni_pairs`)
at the demo's RM and SFT lengths and batch sizes (`demo/config.py`), and runs
one pass of the input pipeline padded (`data.pack=False`) and packed
(`data.pack=True`, rows of `data.pack_length` tokens). Text pairs are
encoded with a BPE tokenizer trained on them (as the demo trains its own);
the media kinds (image, video, audio, and the four kinds mixed) for the
demo's Omni thinker, with its patch and audio frame buckets, a packed row
holding at most the largest of each. A step's slots are the elements of its
token arrays (chosen and rejected for the RM); its real tokens those of its
examples. Same examples per step either way, so the ratio of the fills is the
gain in real tokens per slot a step computes on; for media, the patch slots
(rows x padded patches) are reported too, and the packed rows again with one
more patch and frame bucket of 4x the largest ("_4x": the demo's buckets let
a row hold one image or clip at most).
"""

from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np
from transformers import AutoTokenizer

from omni_rrm_jax.assembly import media as media_lib
from omni_rrm_jax.assembly import models as model_lib
from omni_rrm_jax.core.batch_contract import RM_BATCH, SFT_BATCH
from omni_rrm_jax.data.packing import PackSpec
from omni_rrm_jax.data.pipeline import make_dataset
from omni_rrm_jax.data.tokenize import ExampleEncoder
from omni_rrm_jax.data.tokenizer_train import train_tiny_tokenizer
from omni_rrm_jax.synthetic.corpus import corpus
from omni_rrm_jax.synthetic.omni import generate_omni_pairs

# (kind, max_length, buckets, batch size): the demo's RM and SFT stages.
STAGES = {"rm": (RM_BATCH, 160, (80, 160), 16), "sft": (SFT_BATCH, 576, (448, 576), 8)}


def fill(batches) -> dict:
  """Real tokens, token slots, rows (and patch slots) over `batches`."""
  real = slots = rows = steps = patch_slots = 0
  for b in batches:
    keep = b["index"] >= 0
    for key, mask in b.items():
      if key.endswith("attention_mask") and key != "feature_attention_mask":  # tokens only
        real += int(mask[keep].sum() if keep.ndim == 1 else mask.sum())
        slots += mask.size
    rows += b["valid"].shape[0]
    patch_slots += int(np.prod(b["vision_patches"].shape[:2])) if "vision_patches" in b else 0
    steps += 1
  return {"real_tokens": real, "slots": slots, "fill": real / slots, "rows_per_step": rows / steps,
          "patch_slots_per_step": patch_slots / steps}


def measure(records, tok, stage: str, pack_lengths, media=None, max_segments: int = 64) -> dict:
  """Fills padded and packed (rows of each of `pack_lengths`); `media`: (MediaSpec,
  patch buckets, audio frame buckets) of a multimodal model."""
  kind, max_length, buckets, batch_size = STAGES[stage]
  enc = ExampleEncoder(tok, max_length, kind, media=None if media is None else media[0])
  kw = dict(batch_size=batch_size, buckets=buckets, pad_id=tok.pad_token_id, seed=0,
            num_epochs=1)
  if media is not None:
    kw.update(patch_buckets=media[1], audio_frame_buckets=media[2])
  out = {"padded": fill(make_dataset(records, enc, **kw))}
  for length in pack_lengths:
    spec = PackSpec(length=length, max_segments=max_segments)
    out[f"packed_{length}"] = fill(make_dataset(records, enc, pack=spec, **kw))
  for name, row in out.items():
    row["gain"] = row["fill"] / out["padded"]["fill"]
  return out


def measure_media(pairs: int, folder: str) -> dict:
  """Fills of the demo's Omni RM and judge SFT stages on each media kind and on all
  four mixed, with the demo's tokenizer, towers and buckets."""
  from omni_rrm_jax.demo.config import get_config
  demo = get_config()
  kinds = ("image", "video", "audio")
  records = {k: generate_omni_pairs(pairs, 0, folder, kinds=(k,), prefix=f"b{k}")[0]
             for k in kinds}
  records["mixed"] = generate_omni_pairs(pairs, 1, folder, kinds=("text", *kinds),
                                         prefix="bmixed")[0]
  everything = [r for rs in records.values() for r in rs]
  tok, _ = model_lib.tokenizer_for("", "", folder, corpus(everything))
  report = {}
  for stage, c, lengths in (("rm", demo.rm, (160, 320)), ("sft", demo.sft, (576, 1152))):
    model_cfg = model_lib.model_config(c.model, tok, classifier=stage == "rm")
    spec = media_lib.media_spec(c.media, model_cfg, tok, root=folder, model_path="",
                                strict=False)
    patches, frames = tuple(c.media.patch_buckets), tuple(c.media.audio_frame_buckets)
    media = (spec, patches, frames)
    # The same with one more bucket of 4x the largest patch and frame counts:
    # rows of the demo's buckets hold one image (or clip) each at most.
    wide = (spec, patches + (4 * max(patches),), frames + (4 * max(frames),))
    for kind, recs in records.items():
      rows = measure(recs, tok, stage, lengths, media, max_segments=c.data.pack_segments)
      wide_rows = measure(recs, tok, stage, lengths, wide, max_segments=c.data.pack_segments)
      for name, row in wide_rows.items():
        if name != "padded":
          row["gain"] = row["fill"] / rows["padded"]["fill"]
          rows[f"{name}_4x"] = row
      report[f"{stage}_{kind}"] = rows
  return report


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--pairs", type=int, default=512)
  parser.add_argument("--media-pairs", type=int, default=128,
                      help="pairs per media kind (0: text only)")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as folder:
    records, _ = generate_omni_pairs(args.pairs, 0, folder, kinds=("text",))
    train_tiny_tokenizer(corpus(records), folder, vocab_size=1024)
    tok = AutoTokenizer.from_pretrained(folder)
    report = {"rm": measure(records, tok, "rm", (160, 320)),
              "sft": measure(records, tok, "sft", (576, 1152, 2304))}
  if args.media_pairs:
    with tempfile.TemporaryDirectory() as folder:
      report.update(measure_media(args.media_pairs, folder))
  for stage, rows in report.items():
    for name, row in rows.items():
      patches = (f"  patch slots/step {row['patch_slots_per_step']:.0f}"
                 if row["patch_slots_per_step"] else "")
      print(f"{stage:10s} {name:13s} fill {row['fill']:.3f}  gain x{row['gain']:.2f}  "
            f"rows/step {row['rows_per_step']:.2f}{patches}")
  print(json.dumps(report))


if __name__ == "__main__":
  main()
