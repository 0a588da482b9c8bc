"""Exceptions that reach users.

Every problem with user input is raised as a :class:`DitrError` whose message names the file and the
field at fault, so the command line can print one clear line instead of a traceback.
"""

from __future__ import annotations

from pathlib import Path


class DitrError(Exception):
    """An error caused by user input or environment, printed without a traceback by the CLI."""


class SceneError(DitrError, ValueError):
    """A scene directory that does not follow the scene format (docs/design.md#scene-format)."""

    def __init__(self, file: str | Path, field: str | None, problem: str):
        self.file = Path(file)
        self.field = field
        self.problem = problem
        where = f"{self.file}" + (f": {field}" if field else "")
        super().__init__(f"{where}: {problem}")


class ConfigError(DitrError, ValueError):
    """A configuration file, override or value that cannot be used; names where and the key.

    Also a ``ValueError``, so that library callers may catch it as the invalid argument it is.
    A config section's own check does not know the file it came from: it leaves ``where`` empty
    and names its key relative to the section, and the schema reader adds both
    (:func:`ditr.configs.schema.from_mapping`).
    """

    def __init__(self, where: str, key: str | None, problem: str):
        self.where, self.key, self.problem = where, key, problem
        super().__init__(": ".join(part for part in (where, key, problem) if part))
