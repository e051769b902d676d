"""Batch generation with a KV cache for GRPO rollouts and evaluation.

params.py (SamplingParams), logit_filters.py (temperature, top-k, top-p),
sampler.py (generate -> SampleOutput), shared_prefill.py (one prefill per prompt, its cache
repeated for the G samples), scoring.py (sequence_logprobs,
score_completions), prompts.py (left padding into length buckets).
Import the submodules directly; this file imports nothing.
"""
