"""Real tokens per token slot of RM and SFT batches, padded to buckets vs packed.

  python benchmarks/packing_density.py [--pairs 512]

Encodes the demo's generated text pairs (`synthetic.omni.generate_omni_pairs`,
kind "text", with a BPE tokenizer trained on them as the demo trains its own)
at the demo's RM and SFT lengths and batch sizes (`demo/config.py`), and runs
one pass of the input pipeline padded (`data.pack=False`) and packed
(`data.pack=True`, rows of `data.pack_length` tokens). A step's slots are the
elements of its token arrays (chosen and rejected for the RM); its real tokens
those of its examples. Same examples per step either way, so the ratio of the
fills is the gain in real tokens per slot a step computes on.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np
from transformers import AutoTokenizer

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
  """Real tokens, token slots and rows over `batches`."""
  real = slots = rows = steps = 0
  for b in batches:
    keep = b["index"] >= 0
    for key, mask in b.items():
      if key.endswith("attention_mask"):
        real += int(mask[keep].sum() if keep.ndim == 1 else mask.sum())
        slots += mask.size
    rows += b["valid"].shape[0]
    steps += 1
  return {"real_tokens": real, "slots": slots, "fill": real / slots, "rows_per_step": rows / steps}


def measure(records, tok, stage: str, pack_lengths) -> dict:
  kind, max_length, buckets, batch_size = STAGES[stage]
  enc = ExampleEncoder(tok, max_length, kind)
  kw = dict(batch_size=batch_size, buckets=buckets, pad_id=tok.pad_token_id, seed=0,
            num_epochs=1)
  out = {"padded": fill(make_dataset(records, enc, **kw))}
  for length in pack_lengths:
    spec = PackSpec(length=length, max_segments=64)
    out[f"packed_{length}"] = fill(make_dataset(records, enc, pack=spec, **kw))
  for name, row in out.items():
    row["gain"] = row["fill"] / out["padded"]["fill"]
  return out


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--pairs", type=int, default=512)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as folder:
    records, _ = generate_omni_pairs(args.pairs, 0, folder, kinds=("text",))
    train_tiny_tokenizer(corpus(records), folder, vocab_size=1024)
    tok = AutoTokenizer.from_pretrained(folder)
    report = {"rm": measure(records, tok, "rm", (160, 320)),
              "sft": measure(records, tok, "sft", (576, 1152, 2304))}
  for stage, rows in report.items():
    for name, row in rows.items():
      print(f"{stage:4s} {name:13s} fill {row['fill']:.3f}  gain x{row['gain']:.2f}  "
            f"rows/step {row['rows_per_step']:.2f}")
  print(json.dumps(report))


if __name__ == "__main__":
  main()
