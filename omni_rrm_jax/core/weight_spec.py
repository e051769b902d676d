"""Settings that weigh names: "name:weight,name:weight" (task weights, reward functions).

Plain Python, one parser for every such setting, so each says the same about a
malformed entry: the setting, the entry and what is wrong with it.
"""

from __future__ import annotations

import math


def parse_weights(spec: str, setting: str, *, bare_weight: float | None = None,
                  example: str = "name:2") -> dict[str, float]:
  """"a:2, b:0.5" -> {"a": 2.0, "b": 0.5}, in the order written.

  Args:
    spec: comma-separated `name:weight` entries; blanks around them and empty
      entries are ignored.
    setting: the setting's name, for the error messages.
    bare_weight: the weight of an entry without one (None: every entry needs one).
    example: a well-formed entry, shown when an entry lacks its weight.

  Raises:
    ValueError: one line naming `setting` and the entry: a name without a
      weight (when `bare_weight` is None), an empty name, a weight that is no
      finite number, or a name listed twice.
  """
  out: dict[str, float] = {}
  for item in (i.strip() for i in spec.split(",")):
    if not item:
      continue
    name, sep, value = (p.strip() for p in item.partition(":"))
    if not name:
      raise ValueError(f"bad setting: {setting} has {item!r}, an entry without a name")
    if name in out:
      raise ValueError(f"bad setting: {setting} lists {name!r} twice")
    if not (sep and value):
      if bare_weight is None:
        raise ValueError(f"bad setting: {setting} has {item!r}; write name:weight, "
                         f"e.g. {example}")
      out[name] = float(bare_weight)
      continue
    try:
      weight = float(value)
    except ValueError:
      weight = math.nan
    if not math.isfinite(weight):
      raise ValueError(f"bad setting: {setting} has {item!r}; its weight {value!r} is not a "
                       "finite number")
    out[name] = weight
  return out


def parse_response_probe(spec: str, weight: object) -> tuple[str, str, int] | None:
  """`data.response_probe` "GOOD,BAD" and `data.response_probe_weight` ->
  (GOOD, BAD, weight); None for "".

  Raises:
    ValueError: "SETTING: what is wrong", one line.
  """
  if not spec:
    return None
  words = [w.strip() for w in spec.split(",")]
  if len(words) != 2 or not all(words) or words[0] == words[1] or any(" " in w for w in words):
    raise ValueError(f"data.response_probe={spec!r}: expected two different words, the "
                     "preferred response's then the other's, e.g. right,wrong")
  if not isinstance(weight, int) or isinstance(weight, bool) or weight < 1:
    raise ValueError(f"data.response_probe_weight={weight!r}: expected an integer >= 1")
  return words[0], words[1], weight
