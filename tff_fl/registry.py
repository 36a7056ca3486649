"""`Registry`: a named collection (name -> object) that refuses duplicates and lists what is allowed.

One instance each holds the tasks (`tff_fl.tasks.TASKS`), models (`tff_fl.models.keras_models.MODELS`), algorithms
(`tff_fl.algorithms.builders.ALGORITHMS`), aggregator stages (`tff_fl.aggregators.spec.STAGES`) and the binary's
components (`experiments.components.COMPONENTS`). Every built-in entry is registered when `tff_fl` is imported;
a user module adds more with `register(name, obj)` (the binary imports it with `--plugin=module`).

Errors name the registry's `kind` (the Python argument, e.g. `algorithm`); the binary turns it into the flag.
"""

import collections
from typing import Any, Iterator


class Registry:
  """Ordered name -> object; `register` of an existing name is a ValueError, `get` of an unknown one too."""

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: collections.OrderedDict[str, Any] = collections.OrderedDict()

  def register(self, name: str, obj: Any) -> Any:
    """Adds `obj` as `name` and returns it (usable as a decorator-style call); a name taken is a ValueError."""
    if not isinstance(name, str) or not name:
      raise ValueError(f'{self.kind} names are non-empty strings; got {name!r}.')
    if name in self._entries:
      raise ValueError(f'{self.kind} {name!r} is already registered; pick another name.')
    self._entries[name] = obj
    return obj

  def names(self) -> tuple[str, ...]:
    return tuple(self._entries)

  def get(self, name: str) -> Any:
    if name not in self._entries:
      raise ValueError(f"{self.kind} must be one of {', '.join(self._entries)}; got {name!r}.")
    return self._entries[name]

  def items(self):
    return self._entries.items()

  def __contains__(self, name) -> bool:
    return name in self._entries

  def __iter__(self) -> Iterator[str]:
    return iter(self._entries)

  def __len__(self) -> int:
    return len(self._entries)

  def __repr__(self) -> str:
    return f"Registry({self.kind!r}: {', '.join(self._entries)})"
