"""Readers: the preference formats people have, turned into PreferenceRecords.

Each format is a converter from one decoded row to a native record dict,
registered by name in `READERS` so that configs can choose it. `read_records`
does the rest for every format alike: opening JSONL or JSON-array files
(gzipped or not), ArrayRecord files of JSON rows and Parquet files (pyarrow,
the format benchmarks are distributed in), sniffing the format, validating,
counting bad rows and checking media paths.

Formats and their label conventions:

  native       our JSONL (see `records.py`); label "A" | "B" | "equal".
  hh_rlhf      Anthropic HH-RLHF: `chosen` / `rejected` full transcripts.
  rewardbench  `prompt` / `chosen` / `rejected`, optional `subset`, `id`.
  llmbar       `input` / `output_1` / `output_2` / `label`, where label 1 means
               output_1 (response_a) is better and 2 means output_2 is; subset
               is the file stem, e.g. "Adversarial-Neighbor".
  pairwise     `text_prompt` / `answer_a` / `answer_b` / `label`, where label 0
               means answer_a (response_a) is better and 1 means answer_b is;
               optional `image` / `images` / `video` / `audio` media and
               `modality` (inferred from the media when absent).
  chat         `prompt` / `chosen` / `rejected` as strings or message lists
               (`chat_rows.py`); hh_rlhf and rewardbench read message lists too.
  rewardbench2, vl_rewardbench, mm_rewardbench, omni_rewardbench, pandalm:
               the published benchmarks (`benchmark_readers.py`).

For the chosen/rejected formats the chosen response lands in A or B by a coin
flip seeded by (seed, record id), so a judge that always says "A" scores 50%
and a rerun gives the same order; `chosen_as_a=True` keeps chosen as A.

Which rows are skipped and which are kept but flagged is decided in
`records.py` (`validate_record`, `degeneracies`) for every format, plus two
HH-RLHF cases here: a transcript with no Assistant turn is skipped, and a pair
whose transcripts differ before their last turn is split at the last
Assistant turn they share, kept and flagged.

Files without an `id` field get ids "<file stem>/<row index>", 0-based.

Whatever a row holds, it costs one skipped-and-counted row (or, in strict
mode, one error naming its file and line), never the run: a row longer than
`max_record_bytes` ("record too large", measured on its bytes before they are
decoded, except in a JSON array file, which is read whole), JSON the decoder
refuses ("bad JSON"), a number past Python's integer-digit limit ("number too
long"), nesting deeper than the interpreter's recursion limit ("JSON nested
too deeply"), text with lone surrogates, and anything else a converter
raises.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import logging
import os
import re
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from omni_rrm_jax.core.registry import Registry
from omni_rrm_jax.data.bad_records import BadRecordCounter
from omni_rrm_jax.data.chat_rows import chat_pair
from omni_rrm_jax.data.records import (BadRecord, PreferenceRecord, degeneracies,
                                       resolve_media_path, validate_record)

_LOG = logging.getLogger(__name__)

_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".array_record", ".parquet")
# How many well-formed rows to try before giving up on recognising a format.
_SNIFF_ROWS = 20
# Rows above this many bytes are skipped ("record too large") before they are
# decoded, so one huge line can neither exhaust memory nor stall the input
# pipeline. 4 MiB is about a million tokens of text, far more than any model
# here reads in one example.
DEFAULT_MAX_RECORD_BYTES = 4 * 2**20
# Where media carried inside rows as bytes are written, under the media root.
EMBEDDED_MEDIA_DIR = "embedded_media"


@dataclasses.dataclass
class RowContext:
  """What a converter may know about the row besides its content.

  Attributes:
    source: the file the row came from.
    index: 0-based position of the row among the file's rows.
    where: "file:line", for messages.
    seed: seeds the A/B coin flip.
    chosen_as_a: put the chosen response in A instead of flipping.
    flags: degeneracies the converter noticed; the row is kept and counted.
  """

  source: Path
  index: int
  where: str
  seed: int = 0
  chosen_as_a: bool = False
  flags: list[str] = dataclasses.field(default_factory=list)
  media_root: Path | None = None

  def embedded_media(self, data: bytes, suffix: str) -> str:
    """Writes media a row carries as bytes (a Parquet image column) to a file.

    Records refer to media by path, so embedded bytes land in
    `<media root>/embedded_media/<sha256 of the bytes><suffix>` (the media
    root defaults to the data file's folder); the name depends on the bytes
    only, so a rerun rewrites nothing.

    Returns:
      The path relative to the media root, for the record's `media`.
    """
    if not isinstance(data, (bytes, bytearray)) or not data:
      raise BadRecord("embedded media must be non-empty bytes")
    root = self.media_root if self.media_root is not None else self.source.parent
    name = f"{EMBEDDED_MEDIA_DIR}/{hashlib.sha256(data).hexdigest()}{suffix}"
    path = root / name
    if not path.is_file():
      path.parent.mkdir(parents=True, exist_ok=True)
      tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
      tmp.write_bytes(bytes(data))
      os.replace(tmp, path)  # atomic: concurrent readers never see half a file
    return name

  @property
  def stem(self) -> str:
    """The file name without its .json / .jsonl / .gz suffixes."""
    return _stem(self.source)

  def record_id(self, row: Mapping[str, Any]) -> str:
    """The row's own id when it has one, else "<stem>/<index>"."""
    value = row.get("id")
    if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
      return str(value)
    return f"{self.stem}/{self.index}"


@dataclasses.dataclass(frozen=True)
class Reader:
  """A registered format.

  Attributes:
    convert: (row, context) -> a native record dict for `validate_record`, or
      a list of them for a row that holds several pairs (a best-of-4 item);
      raises BadRecord for a row it cannot convert. A row's records are kept
      or skipped together.
    fields: keys whose presence identifies the format when sniffing.
  """

  convert: Callable[[Mapping[str, Any], RowContext], dict[str, Any] | list[dict[str, Any]]]
  fields: frozenset[str]


READERS: Registry[Reader] = Registry("record format")


def register_format(name: str, *fields: str):
  """Registers a converter under `name`, recognised by the presence of `fields`."""
  def decorator(convert):
    READERS.add(name, Reader(convert=convert, fields=frozenset(fields)))
    return convert
  return decorator


def _field(row: Mapping[str, Any], key: str) -> str:
  if key not in row or row[key] is None:
    raise BadRecord(f"missing field {key!r}")
  if not isinstance(row[key], str):
    raise BadRecord(f"{key} must be a string", f"got {type(row[key]).__name__}")
  return row[key]


def _int_label(row: Mapping[str, Any], fmt: str, allowed: tuple[int, int]) -> int:
  if "label" not in row or row["label"] is None:
    raise BadRecord("missing field 'label'")
  label = row["label"]
  # bool is an int subclass, and "1" is a string: neither is a valid label.
  if isinstance(label, bool) or not isinstance(label, int) or label not in allowed:
    raise BadRecord(f"{fmt} label must be {allowed[0]} or {allowed[1]}", f"got {label!r}")
  return label


def _subset(row: Mapping[str, Any]) -> str | None:
  subset = row.get("subset")
  return subset if isinstance(subset, str) and subset else None


def chosen_goes_first(record_id: str, seed: int = 0) -> bool:
  """The seeded coin flip that orders a chosen/rejected pair.

  A hash rather than `random` so the order depends only on (seed, id), not on
  which rows came before or on the Python process.
  """
  digest = hashlib.sha256(f"{seed}:{record_id}".encode("utf-8")).digest()
  return digest[0] % 2 == 0


def _chosen_rejected(ctx: RowContext, record_id: str, prompt: str, chosen: str,
                     rejected: str, subset: str | None) -> dict[str, Any]:
  first = ctx.chosen_as_a or chosen_goes_first(record_id, ctx.seed)
  return {
      "id": record_id,
      "prompt": prompt,
      "response_a": chosen if first else rejected,
      "response_b": rejected if first else chosen,
      "label": "A" if first else "B",
      "modality": "text",
      "subset": subset,
  }


@register_format("native", "response_a", "response_b", "label")
def _native(row: Mapping[str, Any], ctx: RowContext) -> dict[str, Any]:
  del ctx  # Native rows carry everything themselves.
  return dict(row)


_ASSISTANT = "\n\nAssistant:"
HH_REALIGNED = "transcripts differ before the last turn (split at the last shared Assistant turn)"


def split_hh_transcripts(chosen: str, rejected: str) -> tuple[str, str, str, bool]:
  """Splits an HH-RLHF pair into the shared prompt and the two final turns.

  The prompt is everything up to and including the last "\\n\\nAssistant:"
  marker (leading blank lines dropped); each response is what follows it,
  trimmed. A few rows' transcripts differ before their last turn (a turn
  marker missing its blank line, for instance); those are cut after the last
  Assistant marker inside the longest common prefix, so each "response" may
  then span more than one turn.

  Args:
    chosen: the preferred transcript.
    rejected: the other transcript.

  Returns:
    (prompt, chosen_response, rejected_response, realigned), realigned being
    True when the fallback cut was used.

  Raises:
    BadRecord: when there is no Assistant turn, or no shared one.
  """
  cut_c, cut_r = chosen.rfind(_ASSISTANT), rejected.rfind(_ASSISTANT)
  if cut_c < 0 or cut_r < 0:
    raise BadRecord("no Assistant turn in transcript")
  cut = cut_c + len(_ASSISTANT)
  realigned = cut_c != cut_r or chosen[:cut] != rejected[:cut]
  if realigned:
    common = len(os.path.commonprefix([chosen, rejected]))
    last = chosen.rfind(_ASSISTANT, 0, common)
    if last < 0:
      raise BadRecord("transcripts share no Assistant turn")
    cut = last + len(_ASSISTANT)
  prompt = chosen[:cut].lstrip()
  return prompt, chosen[cut:].strip(), rejected[cut:].strip(), realigned


@register_format("hh_rlhf", "chosen", "rejected")
def _hh_rlhf(row: Mapping[str, Any], ctx: RowContext) -> dict[str, Any]:
  if isinstance(row.get("chosen"), list):  # HH-RLHF re-exported as chat messages
    return _chat(row, ctx)
  prompt, chosen, rejected, realigned = split_hh_transcripts(
      _field(row, "chosen"), _field(row, "rejected"))
  if realigned:
    ctx.flags.append(HH_REALIGNED)
  return _chosen_rejected(ctx, ctx.record_id(row), prompt, chosen, rejected, _subset(row))


@register_format("chat", "prompt", "chosen", "rejected", "messages")
def _chat(row: Mapping[str, Any], ctx: RowContext) -> dict[str, Any]:
  """Chat-format rows: prompt / chosen / rejected as strings or message lists
  (`chat_rows.py`), e.g. UltraFeedback's test_prefs."""
  prompt, chosen, rejected = chat_pair(row)
  return _chosen_rejected(ctx, ctx.record_id(row), prompt, chosen, rejected, _subset(row))


# RewardBench's own rows are strings; the same fields as message lists (as some
# frameworks re-export it) read alike.
READERS.add("rewardbench", Reader(convert=_chat, fields=frozenset({"prompt", "chosen", "rejected"})))


@register_format("llmbar", "input", "output_1", "output_2")
def _llmbar(row: Mapping[str, Any], ctx: RowContext) -> dict[str, Any]:
  label = _int_label(row, "llmbar", (1, 2))
  return {
      "id": ctx.record_id(row),
      "prompt": _field(row, "input"),
      "response_a": _field(row, "output_1"),
      "response_b": _field(row, "output_2"),
      "label": "A" if label == 1 else "B",
      "modality": "text",
      "subset": ctx.stem,
  }


def _pairwise_media(row: Mapping[str, Any]) -> dict[str, Any]:
  images = row.get("images", row.get("image"))
  if isinstance(images, str):
    images = [images]
  return {"images": images or [], "video": row.get("video"), "audio": row.get("audio")}


@register_format("pairwise", "text_prompt", "answer_a", "answer_b")
def _pairwise(row: Mapping[str, Any], ctx: RowContext) -> dict[str, Any]:
  label = _int_label(row, "pairwise", (0, 1))
  media = _pairwise_media(row)
  modality = row.get("modality") or (
      "video" if media["video"] else "audio" if media["audio"] else
      "image" if media["images"] else "text")
  return {
      "id": ctx.record_id(row),
      "prompt": _field(row, "text_prompt"),
      "response_a": _field(row, "answer_a"),
      "response_b": _field(row, "answer_b"),
      "label": "A" if label == 0 else "B",
      "modality": modality,
      "media": media,
      "subset": _subset(row),
  }


# ---------------------------------------------------------------------------
# Files -> rows.


def _stem(path: Path) -> str:
  name = path.name
  for suffix in (".gz", ".jsonl", ".json", ".array_record", ".parquet"):
    name = name.removesuffix(suffix)
  return name


def _open_binary(path: Path):
  with open(path, "rb") as f:
    magic = f.read(2)
  return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


# Corrupt compressed data surfaces as any of these while iterating.
_READ_ERRORS = (OSError, EOFError, zlib.error)


def _decode(text: str | bytes, where: str) -> Any:
  """One row's JSON, or the BadRecord saying why it cannot be decoded."""
  try:
    if isinstance(text, bytes):
      text = text.decode("utf-8")
    return json.loads(text)
  except UnicodeDecodeError as e:
    return BadRecord("invalid UTF-8", str(e), where)
  except json.JSONDecodeError as e:
    return BadRecord("bad JSON", str(e), where)
  except RecursionError:
    return BadRecord("JSON nested too deeply", None, where)
  except ValueError as e:  # Python's limit on the digits of an int (4300 by default)
    return BadRecord("number too long", str(e).split(";")[0][:200], where)


def _too_large(size: int, max_bytes: int, where: str) -> BadRecord:
  return BadRecord("record too large", f"{size} bytes > max_record_bytes {max_bytes}", where)


def _rows(path: Path, max_bytes: int) -> Iterator[tuple[int, str, Any]]:
  """Yields (index, "file:line", decoded row or BadRecord) for every row.

  `max_bytes` (0: no limit) bounds each row's size.
  """
  if path.name.endswith(".array_record"):
    yield from _array_record_rows(path, max_bytes)
    return
  if path.name.endswith(".parquet"):
    yield from _parquet_rows(path, max_bytes)
    return
  try:
    with _open_binary(path) as f:
      head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
  except _READ_ERRORS as e:
    yield 0, f"{path}:1", BadRecord("unreadable file data", str(e), f"{path}:1")
    return
  if head.startswith(b"["):
    yield from _json_array_rows(path, max_bytes)
  else:
    yield from _jsonl_rows(path, max_bytes)


def _lines(f, max_bytes: int) -> Iterator[bytes | int]:
  """Each line of a binary file, or, for a line of more than `max_bytes`
  bytes (newline excluded), its size: such a line is never held whole."""
  while True:
    raw = f.readline(max_bytes + 1) if max_bytes else f.readline()
    if not raw:
      return
    if not max_bytes or len(raw) <= max_bytes or raw.endswith(b"\n"):
      yield raw
      continue
    size = len(raw)
    while raw and not raw.endswith(b"\n"):
      raw = f.readline(1 << 20)
      size += len(raw)
    yield size - raw.endswith(b"\n")


def _jsonl_rows(path: Path, max_bytes: int) -> Iterator[tuple[int, str, Any]]:
  index, lineno = 0, 0
  try:
    with _open_binary(path) as f:
      for lineno, raw in enumerate(_lines(f, max_bytes), start=1):
        where = f"{path}:{lineno}"
        if isinstance(raw, int):
          row: Any = _too_large(raw, max_bytes, where)
        elif not raw.strip():
          continue
        else:
          if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
          row = _decode(raw, where)
        yield index, where, row
        index += 1
  except _READ_ERRORS as e:
    # A truncated .gz ends the file early; the rest cannot be recovered.
    where = f"{path}:{lineno + 1}"
    yield index, where, BadRecord("unreadable file data", f"{e}; rest of file lost", where)


def _array_record_rows(path: Path, max_bytes: int) -> Iterator[tuple[int, str, Any]]:
  """Rows of an ArrayRecord file whose records are UTF-8 JSON objects.

  ArrayRecord suits data sets too large to scan as text: records are read in
  chunks, and "file:N" names the N-th record (1-based).
  """
  from array_record.python import array_record_module  # installed with grain

  try:
    reader = array_record_module.ArrayRecordReader(str(path))
  except (OSError, RuntimeError, ValueError) as e:
    yield 0, f"{path}:1", BadRecord("unreadable file data", str(e), f"{path}:1")
    return
  try:
    total = reader.num_records()
    for start in range(0, total, 1024):
      for offset, raw in enumerate(reader.read(list(range(start, min(start + 1024, total))))):
        index = start + offset
        where = f"{path}:{index + 1}"
        too_large = max_bytes and len(raw) > max_bytes
        yield index, where, (_too_large(len(raw), max_bytes, where) if too_large
                             else _decode(raw, where))
  finally:
    reader.close()


def _row_bytes(value: Any) -> int:
  """About how many bytes a decoded row holds (its strings and byte strings)."""
  if isinstance(value, (str, bytes, bytearray)):
    return len(value)
  if isinstance(value, Mapping):
    return sum(len(str(k)) + _row_bytes(v) for k, v in value.items())
  if isinstance(value, (list, tuple)):
    return sum(_row_bytes(v) for v in value)
  return 8


def _parquet_rows(path: Path, max_bytes: int) -> Iterator[tuple[int, str, Any]]:
  """Rows of a Parquet file, read a row group slice at a time; "file:N" names the
  N-th row (1-based). Nested columns come back as dicts and lists, binary ones
  (e.g. embedded images) as bytes."""
  import pyarrow as pa
  import pyarrow.parquet as pq

  try:
    table = pq.ParquetFile(str(path))
    batches = table.iter_batches(batch_size=256)
    index = 0
    for batch in batches:
      for row in batch.to_pylist():
        where = f"{path}:{index + 1}"
        size = _row_bytes(row)
        yield index, where, (_too_large(size, max_bytes, where) if max_bytes and size > max_bytes
                             else row)
        index += 1
  except (OSError, pa.ArrowException) as e:
    yield 0, f"{path}:1", BadRecord("unreadable file data", str(e)[:300], f"{path}:1")


def _json_array_rows(path: Path, max_bytes: int) -> Iterator[tuple[int, str, Any]]:
  """Decodes a JSON array element by element, to know each element's line.

  An element the decoder refuses for its content (too deep, a number too
  long) is skipped by matching brackets, so the elements after it are read.
  """
  try:
    with _open_binary(path) as f:
      text = f.read().decode("utf-8-sig")
  except (UnicodeDecodeError, *_READ_ERRORS) as e:
    yield 0, f"{path}:1", BadRecord("unreadable file data", str(e), f"{path}:1")
    return
  decoder = json.JSONDecoder()
  pos = text.index("[") + 1
  line, line_pos, index = 1, 0, 0
  while True:
    pos = _skip_space(text, pos)
    if pos < len(text) and text[pos] == "]":
      return
    line += text.count("\n", line_pos, pos)
    line_pos = pos
    where = f"{path}:{line}"
    start = pos
    try:
      row, pos = decoder.raw_decode(text, pos)
    except json.JSONDecodeError as e:
      # Without a valid element boundary there is no safe place to resume.
      yield index, where, BadRecord("bad JSON", f"{e}; rest of file lost", where)
      return
    except (RecursionError, ValueError):
      end = _value_end(text, pos)
      if end is None:
        yield index, where, BadRecord("bad JSON", "unbalanced brackets; rest of file lost", where)
        return
      row, pos = _decode(text[start:end], where), end
    if max_bytes and pos - start > max_bytes // 4:  # a character is 1-4 bytes in UTF-8
      size = len(text[start:pos].encode("utf-8", "surrogatepass"))
      if size > max_bytes:
        row = _too_large(size, max_bytes, where)
    yield index, where, row
    index += 1
    pos = _skip_space(text, pos)
    if pos < len(text) and text[pos] == ",":
      pos += 1
    elif pos >= len(text) or text[pos] != "]":
      line += text.count("\n", line_pos, pos)
      where = f"{path}:{line}"
      detail = "expected ',' or ']' in array; rest of file lost"
      yield index, where, BadRecord("bad JSON", detail, where)
      return


_STRUCTURE = re.compile(r'[\[\]{}"\\]')
_SCALAR_END = re.compile(r"[,\]\s]")


def _value_end(text: str, pos: int) -> int | None:
  """The end of the JSON value at `pos`, found by matching brackets outside
  strings (the value itself need not decode); None when it never closes."""
  if text[pos] not in "[{":
    found = _SCALAR_END.search(text, pos)
    return found.start() if found else None
  depth, in_string, skip_until = 0, False, -1
  for match in _STRUCTURE.finditer(text, pos):
    i, char = match.start(), match.group()
    if i < skip_until:
      continue
    if in_string:
      if char == "\\":
        skip_until = i + 2
      elif char == '"':
        in_string = False
    elif char == '"':
      in_string = True
    elif char in "[{":
      depth += 1
    else:
      depth -= 1
      if depth == 0:
        return i + 1
  return None


def _skip_space(text: str, pos: int) -> int:
  while pos < len(text) and text[pos] in " \t\r\n":
    pos += 1
  return pos


def _files(path: Path) -> list[Path]:
  if path.is_dir():
    found = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(_SUFFIXES))
    if not found:
      raise FileNotFoundError(f"no {'/'.join(_SUFFIXES)} files in {path}")
    return found
  if not path.is_file():
    raise FileNotFoundError(f"no such data file: {path}")
  return [path]


def sniff_format(row: Mapping[str, Any]) -> str | None:
  """The registered format whose identifying fields the row has, or None.

  When several match, the one with the most identifying fields wins, so a
  rewardbench row (prompt, chosen, rejected) is not taken for HH-RLHF.
  """
  matches = [name for name in READERS if READERS.get(name).fields <= row.keys()]
  if not matches:
    return None
  return max(matches, key=lambda name: len(READERS.get(name).fields))


def _sniffed(path: Path, rows: Iterator[tuple[int, str, Any]]) -> tuple[str, list]:
  """Reads rows until one reveals the format; returns it and the rows read."""
  seen, tried = [], 0
  for item in rows:
    seen.append(item)
    row = item[2]
    if isinstance(row, Mapping):
      fmt = sniff_format(row)
      if fmt:
        return fmt, seen
      tried += 1
      if tried >= _SNIFF_ROWS:
        break
  keys = next((sorted(r) for _, _, r in seen if isinstance(r, Mapping)), [])
  if not seen or not keys:
    # An empty file or one with no JSON objects: whatever the format, no rows.
    return "native", seen
  raise ValueError(
      f"{path}: cannot tell the record format from the fields {keys}; known formats: "
      f"{', '.join(READERS.names())} (pass one by name instead of 'auto')")


def file_rows(path: str | os.PathLike[str], max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
              ) -> Iterator[tuple[Path, int, str, Any]]:
  """(file, index, "file:line", decoded row or BadRecord) of every row of a file
  or folder, for readers of other record kinds (Best-of-N items)."""
  for file in _files(Path(path)):
    for index, where, row in _rows(file, max_record_bytes or 0):
      yield file, index, where, row


def resolve_format(path: str | os.PathLike[str], fmt: str = "auto") -> str:
  """`fmt`, or for "auto" the format recognised from the first file's rows
  (what `read_records` reads that file as)."""
  if fmt != "auto":
    return fmt
  first = _files(Path(path))[0]
  return _sniffed(first, _rows(first, DEFAULT_MAX_RECORD_BYTES))[0]


# ---------------------------------------------------------------------------
# The entry point.


def read_records(path: str | os.PathLike[str], fmt: str = "auto", *,
                 counter: BadRecordCounter | None = None, strict: bool = False,
                 media_root: str | os.PathLike[str] | None = None,
                 limit: int | None = None, seed: int = 0, chosen_as_a: bool = False,
                 max_record_bytes: int | None = DEFAULT_MAX_RECORD_BYTES
                 ) -> Iterator[PreferenceRecord]:
  """Reads preference records from a file (or a folder of them), any format.

  Rows that cannot be used are skipped and counted in `counter`, never
  raised, unless `strict`. Degenerate rows that are kept are counted as
  flagged. The counter's summary is logged when the files are exhausted.

  Args:
    path: a .jsonl / .json file (JSON lines or one JSON array; gzip allowed),
      an .array_record or .parquet file, or a folder whose such files are
      read in name order.
    fmt: a name in `READERS`, or "auto" to recognise it from each file's
      field names.
    counter: receives kept / skipped / flagged counts; a fresh one if None.
    strict: raise on the first bad row instead of skipping it.
    media_root: when given, every media path must resolve to an existing file
      under it; other rows are skipped.
    limit: stop after this many records have been yielded.
    seed: seeds the A/B coin flip of chosen/rejected formats.
    chosen_as_a: keep chosen as response A (label always "A") instead.
    max_record_bytes: a row longer than this many bytes (its JSON text) is
      skipped as "record too large" before it is decoded; 0 or None: no
      limit.

  Yields:
    PreferenceRecords in file order.

  Raises:
    ValueError: in strict mode, naming file, line and reason of the first bad
      row; or when fmt="auto" cannot recognise a file's format.
    KeyError: for an unknown format name (the message lists the known ones).
    FileNotFoundError: when `path` does not exist.
  """
  # Checked here, not in the generator, so that a bad name or path fails at
  # the call rather than at the first `next`.
  if fmt != "auto":
    READERS.get(fmt)
  if max_record_bytes is not None and max_record_bytes < 0:
    raise ValueError(f"max_record_bytes must be >= 0 (0: no limit), got {max_record_bytes}")
  files = _files(Path(path))
  counter = BadRecordCounter() if counter is None else counter
  return _generate(path, files, fmt, counter, strict=strict, media_root=media_root,
                   limit=limit, seed=seed, chosen_as_a=chosen_as_a,
                   max_bytes=max_record_bytes or 0)


def _generate(path: str | os.PathLike[str], files: list[Path], fmt: str,
              counter: BadRecordCounter, *, strict: bool,
              media_root: str | os.PathLike[str] | None, limit: int | None, seed: int,
              chosen_as_a: bool, max_bytes: int) -> Iterator[PreferenceRecord]:
  produced = 0
  for file in files:
    if limit is not None and produced >= limit:
      break
    rows: Iterable[tuple[int, str, Any]] = _rows(file, max_bytes)
    file_fmt = fmt
    if fmt == "auto":
      file_fmt, head = _sniffed(file, iter(rows))
      rows = _chain(head, rows)
    reader = READERS.get(file_fmt)
    for index, where, row in rows:
      ctx = RowContext(source=file, index=index, where=where, seed=seed, chosen_as_a=chosen_as_a,
                       media_root=Path(media_root) if media_root is not None else None)
      try:
        records = _to_records(row, reader, ctx, media_root)
      except BadRecord as e:
        counter.skip_or_raise(e, where, strict)
        continue
      for record in records:
        for reason in ctx.flags + degeneracies(record):
          counter.flag(reason, where)
        counter.keep()
        produced += 1
        yield record
      if limit is not None and produced >= limit:
        break
  _LOG.info("read %s: %s", path, counter.summary())


def _chain(head: list, rest: Iterable) -> Iterator:
  yield from head
  yield from rest


def _to_records(row: Any, reader: Reader, ctx: RowContext,
                media_root: str | os.PathLike[str] | None) -> list[PreferenceRecord]:
  if isinstance(row, BadRecord):
    raise row
  if not isinstance(row, Mapping):
    raise BadRecord("row is not a JSON object", f"got {type(row).__name__}")
  try:
    native = reader.convert(row, ctx)
  except BadRecord:
    raise
  except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
    # A converter (ours or a registered one) tripping over an odd value costs
    # the row, not the run.
    detail = (str(e).splitlines() or [""])[0][:200]
    raise BadRecord(f"row could not be converted ({type(e).__name__})", detail) from None
  records = [validate_record(one, ctx.where)
             for one in (native if isinstance(native, list) else [native])]
  if not records:
    raise BadRecord("row holds no pairs")
  if media_root is not None:
    for record in records:
      for media_path in record.media_paths():
        resolve_media_path(media_root, media_path, must_exist=True)
  return records


# The published benchmarks' formats register themselves in READERS.
from omni_rrm_jax.data import benchmark_readers  # noqa: E402,F401  pylint: disable=wrong-import-position
