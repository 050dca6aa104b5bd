"""Reading and writing the agent's TOML files with errors that name the file and the key.

Hospital IT edits these files by hand, so every mistake must come back as one line saying where:
``/etc/mpc/agent.toml: tables.lung.path: file not found``. Unknown keys are errors too (a typo
in ``min_cell_size`` must not silently fall back to the default).

Writing uses small quoting helpers and hand-written templates, so generated files keep their
explanatory comments and no TOML writer dependency is needed.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from site_agent.errors import ConfigError

_REQUIRED: Final = object()
NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


class Section:
    """One TOML table, remembering its file and dotted key prefix for error messages."""

    def __init__(self, file: Path, prefix: str, data: Mapping[str, Any]) -> None:
        self.file = file
        self.prefix = prefix
        self.data = data

    def where(self, key: str | None = None) -> str:
        """``file: dotted.key`` for messages."""
        dotted = ".".join(p for p in (self.prefix, key) if p)
        return f"{self.file}: {dotted}" if dotted else str(self.file)

    def error(self, key: str | None, message: str) -> ConfigError:
        """A ``ConfigError`` naming this file and key."""
        return ConfigError(f"{self.where(key)}: {message}")

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def _get(self, key: str, default: Any, kind: type | tuple[type, ...], kind_name: str) -> Any:
        if key not in self.data:
            if default is _REQUIRED:
                raise self.error(key, "missing")
            return default
        value = self.data[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            raise self.error(key, f"must be {kind_name}, got {type(value).__name__}")
        return value

    def get_str(self, key: str, default: Any = _REQUIRED) -> str:
        """A non-empty string."""
        value = self._get(key, default, str, "a string")
        if isinstance(value, str) and not value.strip():
            raise self.error(key, "must not be empty")
        return value  # type: ignore[no-any-return]

    def get_int(self, key: str, default: Any = _REQUIRED, minimum: int | None = None) -> int:
        """An integer, at least ``minimum`` if given."""
        value = self._get(key, default, int, "an integer")
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be at least {minimum}, got {value}")
        return value  # type: ignore[no-any-return]

    def get_bool(self, key: str, default: Any = _REQUIRED) -> bool:
        """``true`` or ``false``."""
        return self._get(key, default, bool, "true or false")  # type: ignore[no-any-return]

    def get_str_list(self, key: str, default: Any = _REQUIRED) -> tuple[str, ...]:
        """A list of non-empty strings, without duplicates."""
        value = self._get(key, default, (list, tuple), "a list of strings")
        if not all(isinstance(v, str) and v for v in value):
            raise self.error(key, "must be a list of non-empty strings")
        if len(set(value)) != len(value):
            raise self.error(key, "has duplicate entries")
        return tuple(value)

    def get_path(self, key: str, default: Any = _REQUIRED, must_exist: bool = False) -> Path:
        """A path, resolved against the folder of this file when relative."""
        raw = self.get_str(key, default)
        path = Path(raw).expanduser()
        if not path.is_absolute():
            path = self.file.parent / path
        path = path.resolve()
        if must_exist and not path.exists():
            raise self.error(key, f"file not found: {path}")
        return path

    def section(self, key: str, required: bool = True) -> Section:
        """A sub-table; an empty one if absent and not ``required``."""
        value = self._get(key, _REQUIRED if required else {}, dict, "a table")
        return Section(self.file, ".".join(p for p in (self.prefix, key) if p), value)

    def subsections(self) -> Iterator[tuple[str, Section]]:
        """Each ``[prefix.NAME]`` sub-table with its name (for ``[sites.*]``, ``[tables.*]``)."""
        for name, value in self.data.items():
            if not isinstance(value, dict):
                raise self.error(name, "must be a table")
            yield name, Section(self.file, ".".join(p for p in (self.prefix, name) if p), value)

    def only(self, *allowed: str) -> None:
        """Refuse keys other than ``allowed`` (catches typos)."""
        extra = sorted(set(self.data) - set(allowed))
        if extra:
            raise self.error(extra[0], f"unknown key (allowed here: {', '.join(allowed)})")


def read_toml(path: Path | str) -> Section:
    """Parse a TOML file into a root ``Section``; ``ConfigError`` if unreadable or invalid."""
    file = Path(path).expanduser().resolve()
    try:
        with file.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: invalid TOML: {exc}") from exc
    return Section(file, "", data)


def check_name(section: Section, key: str | None, name: str, what: str) -> str:
    """Names of sites, analysts and tables become file names, TOML keys and certificate CNs."""
    if not NAME_RE.match(name):
        raise section.error(key, f"{what} name {name!r} must be letters, digits, '-' or '_' (at most 63)")
    return name


def toml_str(value: str) -> str:
    """A TOML basic string literal (JSON string escapes are valid TOML ones; DEL is escaped too)."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_multiline(value: str) -> str:
    """A multi-line literal for PEM blocks, which contain no quotes or backslashes."""
    if "'''" in value or "\\" in value:
        return toml_str(value)
    return "'''\n" + value.rstrip("\n") + "\n'''"


def toml_key(name: str) -> str:
    """A bare key when possible, else a quoted one."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else toml_str(name)


def toml_str_list(values: list[str] | tuple[str, ...]) -> str:
    """A one-line TOML array of strings."""
    return "[" + ", ".join(toml_str(v) for v in values) + "]"
