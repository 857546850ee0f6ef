"""Control events on the wire: the encoder's fast path writes what the converter writes."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from beds.codec import converter
from beds.transport.control_event import ControlEvent, decode_event, encode_event

text = st.text(st.characters(codec="utf-8"), max_size=12)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=20,
)


def by_converter(event: ControlEvent) -> bytes:
    document = converter.unstructure(event)
    del document["user"]
    return orjson.dumps(document)


@given(
    st.sampled_from(["record.changed", "records.changed", "node.status"]),
    st.dictionaries(text, json_values, max_size=5),
)
def test_json_data_is_written_as_the_converter_writes_it(kind: str, data: dict[str, Any]) -> None:
    event = ControlEvent(kind=kind, origin="n1", env="dev", data=data)
    assert encode_event(event) == by_converter(event)
    assert decode_event(encode_event(event), "beds") == ControlEvent(
        kind=kind, id=event.id, origin="n1", env="dev", at=event.at, data=data, user="beds"
    )


def test_data_orjson_cannot_write_goes_through_the_converter() -> None:
    event = ControlEvent(kind="node.status", data={"roles": frozenset({"appServer"})})
    assert encode_event(event) == by_converter(event)
    assert orjson.loads(encode_event(event))["data"] == {"roles": ["appServer"]}
    assert b'"user"' not in encode_event(event)  # only RabbitMQ vouches for the sender
