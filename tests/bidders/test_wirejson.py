"""The hot-path JSON codec reads and writes what the standard library does, fast or not."""

from __future__ import annotations

import json
import math

from hypothesis import given
from hypothesis import strategies as st

from bidders import wirejson

scalars = (
    st.none() | st.booleans() | st.integers() | st.text()
    | st.floats(allow_nan=False, allow_infinity=False)
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(values)
def test_what_it_writes_reads_back_the_same_everywhere(value: object) -> None:
    data = wirejson.dumps(value)
    assert json.loads(data) == value
    assert wirejson.loads(data) == value


@given(values)
def test_it_reads_what_the_standard_library_writes(value: object) -> None:
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False)):
        assert wirejson.loads(text) == json.loads(text)


def test_what_orjson_refuses_falls_back_to_the_standard_library() -> None:
    huge = 2**70
    assert wirejson.loads(b'{"n": %d}' % huge) == {"n": huge}
    assert math.isnan(wirejson.loads(b"[NaN]")[0])  # type: ignore[index]
    assert wirejson.loads(b'"\\ud800"') == "\ud800"
    assert json.loads(wirejson.dumps({"n": huge, "s": "\ud800"})) == {"n": huge, "s": "\ud800"}
    assert wirejson.dumps({1: "x"}) == b'{"1":"x"}'
    assert wirejson.dumps({"a": [1, "é"]}) == '{"a":[1,"é"]}'.encode()
