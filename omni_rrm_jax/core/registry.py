"""Name -> object registries, for the things configs choose by name."""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
  """A named table of objects with clear errors on unknown or duplicate names.

  Example:
    REWARDS = Registry("reward function")

    @REWARDS.register("format")
    def format_reward(prompts, completions, **columns): ...

    fn = REWARDS.get("format")
  """

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: dict[str, T] = {}

  def register(self, name: str) -> Callable[[T], T]:
    def decorator(obj: T) -> T:
      self.add(name, obj)
      return obj
    return decorator

  def add(self, name: str, obj: T) -> None:
    if name in self._entries:
      raise KeyError(f"duplicate {self.kind} name {name!r}; already registered: {self.names()}")
    self._entries[name] = obj

  def get(self, name: str) -> T:
    try:
      return self._entries[name]
    except KeyError:
      raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None

  def names(self) -> list[str]:
    return sorted(self._entries)

  def __contains__(self, name: object) -> bool:
    return name in self._entries

  def __iter__(self) -> Iterator[str]:
    return iter(self.names())

  def __len__(self) -> int:
    return len(self._entries)
