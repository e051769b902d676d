"""One 5 MB record through the input pipeline: its default read-ahead keeps
host memory bounded (Grain's own default, 16 threads and 500 batches, encoded
the record 16 times at once: 6.3-6.8 GB of peak RSS growth here, and an OOM kill
with a 10 MB record)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.e2e.runs import ROOT

# Peak RSS growth allowed while taking the first batch. The defaults (2
# threads, 4 batches) measure about 0.95 GB here: two batches of two copies
# of the record encoded at once.
MAX_GROWTH_MB = 1536
RECORD_BYTES = 5_000_000

_SCRIPT = textwrap.dedent("""
    import json, os, resource, sys, tempfile, time
    from transformers import AutoTokenizer
    from omni_rrm_jax.data.pipeline import make_dataset
    from omni_rrm_jax.core.batch_contract import RM_BATCH
    from omni_rrm_jax.data.records import PreferenceRecord
    from omni_rrm_jax.data.tokenize import ExampleEncoder
    from omni_rrm_jax.data.tokenizer_train import train_tiny_tokenizer

    # Should the read-ahead regress, fail here rather than take the machine down.
    resource.setrlimit(resource.RLIMIT_AS, (12 * 2**30, 12 * 2**30))
    size, read_options = json.loads(sys.argv[1])
    folder = tempfile.mkdtemp()
    # Long words become single tokens, so encoding 5 MB takes seconds, not minutes.
    word = " abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz"
    train_tiny_tokenizer([word * 4, "it is 3. it is 4. what is the answer?"] * 50, folder,
                         vocab_size=400)
    encoder = ExampleEncoder(AutoTokenizer.from_pretrained(folder), max_length=64, kind=RM_BATCH)
    prompt = (word * (size // len(word) + 1))[:size - 16]
    record = PreferenceRecord(id="big", prompt=prompt, response_a="it is 3.",
                              response_b="it is 4.", label="A")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.time()
    ds = make_dataset([record], encoder, batch_size=2, buckets=(64,), pad_id=0, seed=0,
                      **read_options)
    batch = next(iter(ds))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"growth_mb": (peak - before) / 1024, "seconds": time.time() - start,
                      "valid": batch["valid"].tolist()}), flush=True)
    os._exit(0)  # without waiting for the batches still being read ahead
""")


def peak_growth(read_options: dict | None = None) -> dict:
  """{"growth_mb", "seconds", "valid"} of taking one batch in a fresh process."""
  arg = json.dumps([RECORD_BYTES, read_options or {}])
  done = subprocess.run([sys.executable, "-c", _SCRIPT, arg], capture_output=True, text=True,
                        cwd=ROOT, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  return json.loads(done.stdout.strip().splitlines()[-1])


def test_one_5mb_record_keeps_peak_memory_bounded():
  result = peak_growth()
  assert result["valid"] == [True, True]
  assert result["growth_mb"] < MAX_GROWTH_MB, result
