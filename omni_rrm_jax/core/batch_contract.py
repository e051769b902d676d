"""The keys of every batch a jitted step reads, declared once.

  RM_BATCH.check(batch)         # KeyError naming what is missing or unknown
  RM_BATCH.required             # ("chosen_input_ids", "chosen_attention_mask", ...)

Three batches reach a step: a preference pair batch (`RM_BATCH`, the scalar
RM), a target-token batch (`SFT_BATCH`, judge SFT) and a rollout minibatch
(`GRPO_BATCH`, the GRPO update). Each is a `BatchContract`; the collation in
`data/batching.py` builds the first two from the contract's fields, the steps
check batches against it, the loops and the RM eval pick the device keys with
it, and every reader of media keys (`models/media_inputs.py`, the sampler,
the prompt padding) takes them from the groups below. `ROW_META` are the
per-row fields every collated batch carries, `HOST_ONLY` those that never go
to the devices. Plain Python: `data/` and `models/` both read it.

Media keys (row-aligned, see `models/media_inputs.py` for the shapes) come
in groups, each whole or not at all: the core keys with any media, then the
vision and the audio groups.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

CORE_MEDIA_KEYS = ("position_ids", "media_index")
VISION_KEYS = ("vision_patches", "vision_perm", "vision_position", "vision_frame",
               "vision_window", "vision_unperm")
AUDIO_KEYS = ("input_features", "feature_attention_mask", "audio_frame_index",
              "audio_frame_valid", "audio_token_valid", "audio_pool_index")
MEDIA_KEYS = (*CORE_MEDIA_KEYS, *VISION_KEYS, *AUDIO_KEYS)
MEDIA_GROUPS = (("core", CORE_MEDIA_KEYS), ("vision", VISION_KEYS), ("audio", AUDIO_KEYS))
# Per-row bookkeeping of a collated batch: `valid` weighs rows on the devices,
# the rest stays on the host (with the grids media collation keeps for M-RoPE).
ROW_META = ("valid", "invalid_reason", "truncated", "modality", "index")
HOST_ONLY = ("invalid_reason", "truncated", "modality", "index", "vision_grid_thw")
# A judge SFT batch's response probes (`data/tokenize.py`, `data.response_probe`):
# [B, 2] each, for response A then B: the position of the response's last token
# in the judge prompt, the verdict word's token the LM head is trained to
# predict there, and that prediction's loss weight (0: no probe).
PROBE_KEYS = ("probe_positions", "probe_targets", "probe_weights")


def check_media_keys(batch: Mapping[str, Any]) -> None:
  """Raises a `KeyError` naming what is missing unless each media group is whole.

  The core keys come with any media; the vision and the audio groups each
  come whole or not at all. A batch without media keys passes.
  """
  if not any(k in batch for k in MEDIA_KEYS):
    return
  problems = []
  for name, keys in MEDIA_GROUPS:
    have = [k for k in keys if k in batch]
    if (name == "core" or have) and len(have) != len(keys):
      problems.append(f"{name} keys missing {[k for k in keys if k not in batch]}")
  if problems:
    raise KeyError(f"media keys come in whole groups (core with any media, vision and audio "
                   f"each all or none): {'; '.join(problems)}")


@dataclasses.dataclass(frozen=True)
class BatchContract:
  """The keys of one kind of batch.

  Attributes:
    name: names the batch in errors.
    token_fields: encoded-example fields of token ids, each collated into an
      ids key and an attention-mask key (`token_keys`).
    padded_fields: other per-token fields of an encoded example and the value
      they are padded with.
    row_fields: per-row float fields of an encoded example, collated as [B].
    other_required: required keys no collation here produces (GRPO's).
    optional: keys a batch may carry besides the required ones.
    pairwise: each row is a preference pair whose chosen and rejected
      sequences share a prompt (and its media).
  """
  name: str
  token_fields: tuple[str, ...] = ()
  padded_fields: tuple[tuple[str, int], ...] = ()
  row_fields: tuple[str, ...] = ()
  other_required: tuple[str, ...] = ()
  optional: tuple[str, ...] = ()
  pairwise: bool = False

  @staticmethod
  def token_keys(field: str) -> tuple[str, str]:
    """(ids key, attention-mask key) of a token field: `input_ids` keeps its
    transformers names, any other field prefixes them (`chosen_input_ids`)."""
    prefix = "" if field == "input_ids" else f"{field}_"
    return f"{prefix}input_ids", f"{prefix}attention_mask"

  @property
  def sequence_fields(self) -> tuple[str, ...]:
    """The encoded-example fields that run along the token axis."""
    return (*self.token_fields, *(f for f, _ in self.padded_fields))

  @property
  def required(self) -> tuple[str, ...]:
    tokens = tuple(k for f in self.token_fields for k in self.token_keys(f))
    return (*tokens, *(f for f, _ in self.padded_fields), *self.other_required)

  @property
  def keys(self) -> tuple[str, ...]:
    """Every key a batch of this kind may carry."""
    return (*self.required, *self.optional)

  def check(self, batch: Mapping[str, Any]) -> None:
    """Raises a one-line `KeyError` on a missing or unknown key or a partial media group."""
    missing = [k for k in self.required if k not in batch]
    unknown = [k for k in batch if k not in self.keys]
    if missing or unknown:
      raise KeyError(f"{self.name} batch: missing {missing}, unknown {unknown}; expected "
                     f"{list(self.required)} plus optional {list(self.optional)}")
    try:
      check_media_keys(batch)
    except KeyError as e:
      raise KeyError(f"{self.name} batch: {e.args[0]}") from None

  def select(self, batch: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of `batch` this contract names (host-only columns dropped)."""
    return {k: batch[k] for k in self.keys if k in batch}


# Packed batches (`data/packing.py`) add segment ids per token field, and
# their per-example fields (margin, valid) are [B, S], one per segment.
RM_BATCH = BatchContract(
    "rm", token_fields=("chosen", "rejected"), row_fields=("margin",),
    optional=("margin", "valid", "chosen_segment_ids", "rejected_segment_ids", *MEDIA_KEYS),
    pairwise=True)
SFT_BATCH = BatchContract(
    "sft", token_fields=("input_ids",), padded_fields=(("loss_mask", 0),),
    optional=("valid", "segment_ids", *PROBE_KEYS, *MEDIA_KEYS))
# A GRPO minibatch (`rl/grpo_step.py` gives the shapes); ref_logp comes with a KL term.
GRPO_BATCH = BatchContract(
    "grpo", other_required=("prompt_ids", "prompt_mask", "completion_ids", "completion_mask",
                            "loss_mask", "old_logp", "adv"),
    optional=("ref_logp", *MEDIA_KEYS))
