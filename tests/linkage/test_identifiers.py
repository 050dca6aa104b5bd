"""The linkage identifier's normalisation: spellings of one person give the same bytes."""

from __future__ import annotations

import datetime

import pandas as pd
import pytest

from site_agent.errors import ConfigError
from site_agent.linkage.identifiers import normalise, one_per_person


def test_national_id_spellings_agree() -> None:
    spellings = ["943 476 5919", "943-476-5919", "９４３４７６５９１９", " 9434765919 ", None, "--"]
    frame = pd.DataFrame({"national_id": spellings})
    ids = normalise(frame, ["national_id"]).tolist()
    assert ids[0] == ids[1] == ids[2] == ids[3] == b"\x00\x0a9434765919"
    assert ids[4] is None and ids[5] is None


def test_name_date_and_sex() -> None:
    frame = pd.DataFrame(
        {
            "family_name": ["Müller-Lüdenscheidt", "MULLER LUDENSCHEIDT", "Muller"],
            "given_name": ["Zoë", "zoe", "Zoe"],
            "birth_date": [datetime.date(1970, 1, 2), "1970-01-02", pd.Timestamp("1970-01-02 13:00")],
            "sex": ["female", "F", "f"],
        }
    )
    ids = normalise(frame, ["family_name", "given_name", "birth_date", "sex"]).tolist()
    assert ids[0] == ids[1] != ids[2]
    assert ids[0] == b"\x00\x12mullerludenscheidt\x00\x03zoe\x00\x0a1970-01-02\x00\x01F"


def test_parts_cannot_run_into_each_other() -> None:
    # Without the length prefixes "ab" + "c" and "a" + "bc" would be one identifier.
    frame = pd.DataFrame({"family_name": ["ab", "a"], "given_name": ["c", "bc"]})
    a, b = normalise(frame, ["family_name", "given_name"]).tolist()
    assert a != b


@pytest.mark.parametrize("parts", [[], ["nhs"], ["sex", "sex"]])
def test_bad_declarations_are_refused(parts: list[str]) -> None:
    with pytest.raises(ConfigError):
        normalise(pd.DataFrame({"sex": ["F"]}), parts)


def test_one_identifier_per_person_the_smallest() -> None:
    persons = pd.Series(["p2", "p1", "p1", "p3", "p2"])
    ids = pd.Series([b"b", b"z", b"a", None, b"b"], dtype=object)
    one = one_per_person(persons, ids)
    assert one.to_dict() == {"p1": b"a", "p2": b"b"}
