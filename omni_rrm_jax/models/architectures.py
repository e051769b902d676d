"""The `config.json` architectures this project implements, chosen by name."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from flax import nnx

from omni_rrm_jax.core.registry import Registry
from omni_rrm_jax.models.config import decoder_config_from_hf
from omni_rrm_jax.models.decoder import CausalLM, SequenceClassifier


@dataclasses.dataclass(frozen=True)
class Architecture:
  """How to build one Hugging Face architecture in Flax.

  Attributes:
    name: the `architectures[0]` string of `config.json`.
    model_type: the `model_type` of its config.
    family: decides bias / norm layout (see `decoder_config_from_hf`).
    module: the NNX class, built as `module(cfg, rngs=...)`.
    make_config: maps a transformers config (plus overrides) to our config.
  """
  name: str
  model_type: str
  family: str
  module: Callable[..., nnx.Module]
  make_config: Callable[..., Any]

  @property
  def is_classifier(self) -> bool:
    return self.name.endswith("ForSequenceClassification")


ARCHITECTURES: Registry[Architecture] = Registry("architecture")


@dataclasses.dataclass(frozen=True)
class Container:
  """A checkpoint format that nests a supported model inside a bigger one.

  Attributes:
    name: the outer `architectures[0]`, e.g. "Qwen2_5OmniForConditionalGeneration".
    model_type: the outer config's `model_type`.
    architecture: the inner model's architecture, loaded unless
      `from_pretrained(architecture=...)` names another one.
    config_key: the outer config's attribute holding the inner config.
    prefix: the inner model's tensor-name prefix, e.g. "thinker.".
    ignored: tensor-name prefixes of the other sub-models, skipped on load.
  """
  name: str
  model_type: str
  architecture: str
  config_key: str
  prefix: str
  ignored: tuple[str, ...] = ()


# Keyed by the outer model_type.
CONTAINERS: Registry[Container] = Registry("checkpoint container")

for _family, _model_type, _prefix in (("qwen2", "qwen2", "Qwen2"), ("qwen3", "qwen3", "Qwen3"),
                                      ("llama", "llama", "Llama")):
  for _suffix, _module in (("ForCausalLM", CausalLM),
                           ("ForSequenceClassification", SequenceClassifier)):
    _name = _prefix + _suffix

    def _make(hf, _family=_family, _name=_name, **overrides):
      return decoder_config_from_hf(hf, _family, architecture=_name, **overrides)

    ARCHITECTURES.add(_name, Architecture(_name, _model_type, _family, _module, _make))


def get_architecture(name: str) -> Architecture:
  """The `Architecture` for a name, or a one-line error listing the supported ones."""
  if name not in ARCHITECTURES:
    raise ValueError(
        f"unsupported architecture {name!r}; supported: {', '.join(ARCHITECTURES.names())}")
  return ARCHITECTURES.get(name)


def _register_multimodal() -> None:
  # Imported here, after the decoder architectures exist, since the multimodal
  # models build on the decoder modules.
  from omni_rrm_jax.models.qwen2_5_vl import (ARCHITECTURE as VL,
                                              CLASSIFIER_ARCHITECTURE as VL_RM,
                                              Qwen2_5_VLForConditionalGeneration,
                                              Qwen2_5_VLForSequenceClassification,
                                              qwen2_5_vl_classifier_config_from_hf,
                                              qwen2_5_vl_config_from_hf)
  ARCHITECTURES.add(VL, Architecture(VL, "qwen2_5_vl", "qwen2_5_vl",
                                     Qwen2_5_VLForConditionalGeneration,
                                     qwen2_5_vl_config_from_hf))
  # Ours only (transformers has no such class); see qwen2_5_vl.py.
  ARCHITECTURES.add(VL_RM, Architecture(VL_RM, "qwen2_5_vl", "qwen2_5_vl",
                                        Qwen2_5_VLForSequenceClassification,
                                        qwen2_5_vl_classifier_config_from_hf))
  from omni_rrm_jax.models.omni import (Qwen2_5OmniThinkerForConditionalGeneration,
                                        Qwen2_5OmniThinkerForSequenceClassification)
  from omni_rrm_jax.models.omni_config import (ARCHITECTURE as OMNI,
                                               CLASSIFIER_ARCHITECTURE as OMNI_RM,
                                               FULL_ARCHITECTURE as OMNI_FULL,
                                               FULL_MODEL_TYPE as OMNI_FULL_TYPE,
                                               MODEL_TYPE as OMNI_TYPE,
                                               omni_thinker_classifier_config_from_hf,
                                               omni_thinker_config_from_hf)
  ARCHITECTURES.add(OMNI, Architecture(OMNI, OMNI_TYPE, "qwen2_5_omni",
                                       Qwen2_5OmniThinkerForConditionalGeneration,
                                       omni_thinker_config_from_hf))
  # Ours only, like the Qwen2.5-VL classifier; see omni.py.
  ARCHITECTURES.add(OMNI_RM, Architecture(OMNI_RM, OMNI_TYPE, "qwen2_5_omni",
                                          Qwen2_5OmniThinkerForSequenceClassification,
                                          omni_thinker_classifier_config_from_hf))
  # Released checkpoints (e.g. Qwen/Qwen2.5-Omni-7B) are the full model: the
  # thinker under "thinker." beside the speech-output talker and token2wav.
  CONTAINERS.add(OMNI_FULL_TYPE, Container(OMNI_FULL, OMNI_FULL_TYPE, OMNI, "thinker_config",
                                           "thinker.", ("talker.", "token2wav.")))


_register_multimodal()
