"""Packaging for omni-rrm-jax."""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "jax>=0.8",
    "flax>=0.12",
    "optax>=0.2.5",
    "orbax-checkpoint>=0.11",
    "grain>=0.2.12",
    "transformers>=5.0",  # configs and tokenizers only; no torch at run time
    "safetensors>=0.5",
    "ml-collections>=1.0",
    "einops>=0.8",
    "sentencepiece>=0.2",
    "tokenizers>=0.21",
    "numpy>=1.26",
    "ml_dtypes>=0.5",
    "absl-py>=2.1",
    "tqdm>=4.66",
    "tensorboardX>=2.6",
    # reward functions (plain Python, see omni_rrm_jax/rewards)
    "sacrebleu>=2.4",
    "rouge-score>=0.1.2",
    "nltk>=3.9",
    "regex>=2024.0",
    # Parquet input (benchmarks are distributed in it)
    "pyarrow>=14",
    # media decoding (images, video, audio), no torch
    "pillow>=10",
    "av>=12",
    "soundfile>=0.12",
    # resampling as librosa / transformers / the Qwen2.5-Omni utilities do (soxr_hq)
    "soxr>=0.3",
    # the main job's training-curve plots
    "matplotlib>=3.7",
    # `omni-rrm serve` (an ASGI app under uvicorn, Prometheus metrics) and GRPO's
    # remote reward and `construct` (httpx): small pure-Python packages, so a runtime dependency
    # rather than an extra that a GRPO run with reward.remote_url could miss
    "starlette>=0.40",
    "uvicorn>=0.30",
    "httpx>=0.27",
    "prometheus-client>=0.20",
]

EXTRAS = {
    # torch is used only by the parity tests; this exact pin installs a CPU build.
    # peft loads the exported LoRA adapters in the export tests.
    "test": ["pytest>=8", "torch==2.13.0", "scipy>=1.10", "peft>=0.21"],
    "tpu": ["jax[tpu]>=0.8"],
    "cuda": ["jax[cuda12]>=0.8"],
}

setup(
    name="omni-rrm-jax",
    version="0.1.0",
    description="Multimodal reward models and GRPO in JAX / Flax NNX",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["omni_rrm_jax", "omni_rrm_jax.*"]),
    # The C++ source of model.attention="cpu_fused", built on first use.
    package_data={"omni_rrm_jax.models": ["csrc/*.cc"]},
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["omni-rrm=omni_rrm_jax.main:run"]},
)
