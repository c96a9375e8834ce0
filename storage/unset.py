"""`UNSET`: the default of `update(...)` arguments, meaning "leave this field as it is".

None cannot mean that, since None means "clear this field".
"""

from __future__ import annotations

from enum import Enum


class Unset(Enum):
    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET = Unset.UNSET
