"""One parser for "name:weight" settings: what it accepts and the line it gives otherwise."""

import pytest

from omni_rrm_jax.core.weight_spec import parse_weights


def test_entries_in_order_with_blanks_ignored():
  assert parse_weights(" b:2, a:0.5 ,, ", "x.w") == {"b": 2.0, "a": 0.5}
  assert list(parse_weights("b:2,a:1", "x.w")) == ["b", "a"]
  assert parse_weights("", "x.w") == {}
  # A bare name takes the bare weight when the setting has one.
  assert parse_weights("a, b:3", "x.w", bare_weight=1.0) == {"a": 1.0, "b": 3.0}
  assert parse_weights("a:-0.5", "x.w") == {"a": -0.5}  # the sign is the caller's rule


@pytest.mark.parametrize("spec, message", [
    ("a", "x.w has 'a'; write name:weight, e.g. t:2"),
    ("a:", "x.w has 'a:'; write name:weight"),
    (":2", "x.w has ':2', an entry without a name"),
    ("a:two", "x.w has 'a:two'; its weight 'two' is not a finite number"),
    ("a:inf", "its weight 'inf' is not a finite number"),
    ("a:1,b:2,a:3", "x.w lists 'a' twice"),
])
def test_a_bad_entry_is_named(spec, message):
  with pytest.raises(ValueError, match="^bad setting: ") as err:
    parse_weights(spec, "x.w", example="t:2")
  assert message in str(err.value)
