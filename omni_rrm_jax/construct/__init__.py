"""Preference data built from live models behind OpenAI-compatible endpoints.

`omni-rrm construct` (`pipeline.run`) asks a strong and a weak model for a
response to each prompt (with its media), asks two teacher models to judge
each pair with the rubric in both A/B orders, and keeps the pairs the teachers
agree on as native preference records whose rationale is a teacher's judgment.
Plain Python and `httpx`: no JAX.
"""
