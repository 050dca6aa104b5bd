"""The linkage identifier: how every site turns its own columns into the same bytes per person.

The OPRF (:mod:`.oprf`) maps equal bytes to equal keys and anything else to unrelated keys, so
two sites link a person only if they normalise the person's identifier identically. The
consortium declares the parts of the identifier (``schema.toml``, ``[linkage]``); each part has
one documented normalisation:

* ``national_id``: Unicode NFKC, upper case, every character other than a letter or a digit
  removed ("943 476 5919", "943-476-5919" and "9434765919" are one identifier);
* ``family_name``, ``given_name``: NFKD with the combining marks dropped (accents), lower case,
  only letters a-z kept ("Müller-Lüdenscheidt" -> "mullerludenscheidt");
* ``birth_date``: the ISO date YYYY-MM-DD (a date, a timestamp or text that parses as a date);
* ``sex``: the first letter, upper case ("female" -> "F").

The identifier of a person is its parts in the declared order, each prefixed by its length
(so no two different part lists give the same bytes), with a missing part making the whole
identifier missing (such persons cannot be linked and are left out of linkage, counted apart).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError

_NOT_ALNUM = re.compile(r"[^0-9A-Z]")
_NOT_LETTER = re.compile(r"[^a-z]")


def _national_id(v: Any) -> str:
    return _NOT_ALNUM.sub("", unicodedata.normalize("NFKC", str(v)).upper())


def _name(v: Any) -> str:
    plain = "".join(c for c in unicodedata.normalize("NFKD", str(v)) if not unicodedata.combining(c))
    return _NOT_LETTER.sub("", plain.lower())


def _date(v: Any) -> str:
    stamp = pd.Timestamp(v)
    return "" if pd.isna(stamp) else str(stamp.date().isoformat())


def _sex(v: Any) -> str:
    return str(v).strip()[:1].upper()


PARTS: dict[str, Callable[[Any], str]] = {
    "national_id": _national_id,
    "family_name": _name,
    "given_name": _name,
    "birth_date": _date,
    "sex": _sex,
}


def check_parts(parts: Sequence[str]) -> tuple[str, ...]:
    """The declared parts, validated: known names, none twice, at least one."""
    unknown = [p for p in parts if p not in PARTS]
    if not parts or unknown or len(set(parts)) != len(parts):
        raise ConfigError(
            f"a linkage identifier is a list of distinct parts among {', '.join(PARTS)}"
            + (f" (unknown: {', '.join(unknown)})" if unknown else "")
        )
    return tuple(parts)


def normalise(frame: pd.DataFrame, parts: Sequence[str]) -> pd.Series:
    """One identifier (bytes) per row of ``frame``, whose columns are named by ``parts``;
    None where a part is missing or normalises to nothing."""
    out: list[bytes | None] = []
    columns = [frame[p].tolist() for p in check_parts(parts)]
    for row in zip(*columns, strict=True):
        fields: list[bytes] = []
        for part, value in zip(parts, row, strict=True):
            text = "" if value is None or (not isinstance(value, str) and pd.isna(value)) else PARTS[part](value)
            if not text:
                fields = []
                break
            raw = text.encode()
            fields.append(len(raw).to_bytes(2, "big") + raw)
        out.append(b"".join(fields) if fields else None)
    return pd.Series(out, index=frame.index, dtype=object)


def one_per_person(persons: pd.Series, ids: pd.Series) -> pd.Series:
    """Each person's smallest identifier, indexed by person (sorted); persons with none left out.

    Vectorised: the identifiers are factorised in sorted order and the smallest code per person
    is kept (a group-by minimum over bytes objects is two orders of magnitude slower)."""
    present = ids.notna().to_numpy()
    codes, uniques = pd.factorize(ids[present], sort=True)
    smallest = pd.Series(codes, index=persons[present].to_numpy()).groupby(level=0, sort=True).min()
    return pd.Series(np.asarray(uniques, dtype=object)[smallest.to_numpy()], index=smallest.index, dtype=object)
