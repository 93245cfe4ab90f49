"""The shared client's pieces that no server can be scripted into sending: the event-stream reader's edge cases."""

from __future__ import annotations

import asyncio

import pytest

from xiyou.backends.openai_client import BadAnswer, chunk_delta, sse_data


def _events(*lines: bytes) -> list:
    async def source():
        for line in lines:
            yield line

    async def collect():
        return [event async for event in sse_data(source())]

    return asyncio.run(collect())


def test_the_event_stream_reader_follows_the_format():
    got = _events(
        b": keep-alive\n",  # a comment
        b"id: 1\r\n",
        b'data:{"a": 1}\r\n',  # no space after the colon, CRLF line ends
        b"\n",
        b'data: {"b":\n',  # one event's data over two lines, joined by a newline
        b"data: 2}\n",
        b"\n",
        b"\n",  # a blank line with no data dispatches nothing
        b'data: {"c": 3}\n',  # the server closed without the blank line after the last event
    )
    assert got == [{"a": 1}, {"b": 2}, {"c": 3}]
    assert _events(b'data: {"a": 1}\n', b"\n", b"data: [DONE]\n", b"\n", b'data: {"late": 1}\n', b"\n") == [{"a": 1}]


def test_the_event_stream_reader_refuses_what_is_not_a_reply():
    with pytest.raises(BadAnswer, match=r"a streamed event is not JSON: '\{oops'"):
        _events(b"data: {oops\n", b"\n")
    with pytest.raises(BadAnswer, match=r"the server reported an error mid-reply: .*overloaded"):
        _events(b"event: error\n", b'data: {"message": "overloaded"}\n', b"\n")


def test_chunks_are_read_as_the_api_defines_them():
    assert chunk_delta({"choices": [{"delta": {"content": "俺"}, "finish_reason": None}]}) == ("俺", False)
    assert chunk_delta({"choices": [{"delta": {}, "finish_reason": "stop"}]}) == ("", True)
    assert chunk_delta({"choices": []}) == ("", False)  # usage-only chunks
    with pytest.raises(BadAnswer, match="reported an error mid-reply"):
        chunk_delta({"error": {"message": "boom"}})
    with pytest.raises(BadAnswer, match="not a JSON object"):
        chunk_delta([1, 2])
    with pytest.raises(BadAnswer, match=r"no choices\[0\] object"):
        chunk_delta({"choices": ["text"]})
