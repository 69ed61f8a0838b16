"""The host <-> session wire format: binary run requests and replies, checked field by field."""

from __future__ import annotations

import pytest

from tir_agent.sandbox import protocol as proto
from tir_agent.sandbox.result import ExecutionResult


def body(frame: bytes) -> bytes:
    (size,) = proto.HEADER.unpack_from(frame)
    assert len(frame) == proto.HEADER.size + size
    return frame[proto.HEADER.size :]


def test_run_request_round_trips_any_code() -> None:
    code = "print('é \\ud800')\nx = '\ud800'"  # a lone surrogate survives, as it did in JSON
    assert proto.parse_run(body(proto.run_frame(7, 2.5, 1000, code))) == (7, 2.5, 1000, 0, code)
    ipython = proto.run_frame(8, 1.0, 5, code, proto.cell_mode(True, "Minimal"))
    assert proto.parse_run(body(ipython)) == (8, 1.0, 5, 4, code)
    with pytest.raises(ValueError):
        proto.parse_run(b"short")


def test_result_round_trips_into_a_valid_execution_result() -> None:
    frame = proto.result_frame(3, "timeout", "out é", "err\n", True, False, 0.25, "lost", "timeout")
    rid, fields = proto.parse_reply(body(frame))
    assert rid == 3 and fields is not None
    result = ExecutionResult.model_validate(fields)
    assert result == ExecutionResult(
        status="timeout",
        stdout="out é",
        stderr="err\n",
        stdout_truncated=True,
        duration=0.25,
        state="lost",
        reason="timeout",
    )
    none = proto.result_frame(0, "completed", "", "", False, False, 0.0, "kept", None)
    assert proto.parse_reply(body(none)) == (
        None,
        ExecutionResult(status="completed").model_dump(),
    )


def test_closed_frame() -> None:
    assert proto.parse_reply(body(proto.CLOSED_FRAME)) == (None, None)


@pytest.mark.parametrize(
    "garbage",
    [
        b"hello",  # what a cell writing into its session socket sends in test_lifecycle
        b"R" + bytes(proto.RESULT.size),  # wrong lengths
        proto.RESULT.pack(b"X", 1, 0, 0, 0, 0, 0.0, 0, 0),  # unknown kind
        proto.RESULT.pack(b"R", 1, 9, 0, 0, 0, 0.0, 0, 0),  # unknown status
        proto.RESULT.pack(b"R", 1, 0, 9, 0, 0, 0.0, 0, 0),  # unknown state
        proto.RESULT.pack(b"R", 1, 0, 0, 99, 0, 0.0, 0, 0),  # unknown reason
        proto.RESULT.pack(b"R", 1, 0, 0, 0, 4, 0.0, 0, 0),  # unknown flag
        proto.RESULT.pack(b"R", 1, 0, 0, 0, 0, float("nan"), 0, 0),
        proto.RESULT.pack(b"R", 1, 0, 0, 0, 0, 0.0, 1, 0) + b"\xff",  # invalid UTF-8
        proto.RESULT.pack(b"R", 1, 0, 0, 0, 0, 0.0, 5, 0) + b"ab",  # shorter than announced
        proto.RESULT.pack(b"C", 0, 0, 0, 0, 0, 0.0, 0, 0) + b"x",
    ],
)
def test_garbled_replies_are_rejected(garbage: bytes) -> None:
    with pytest.raises(ValueError):
        proto.parse_reply(garbage)


def test_unframe_keeps_partial_frames() -> None:
    frames = proto.run_frame(1, 1.0, 5, "a") + proto.run_frame(2, 1.0, 5, "b")
    buffer = bytearray(frames[:-1])
    bodies = proto.unframe_bodies(buffer)
    assert [proto.parse_run(b)[0] for b in bodies] == [1]
    buffer += frames[-1:]
    assert [proto.parse_run(b)[4] for b in proto.unframe_bodies(buffer)] == ["b"]
    assert buffer == bytearray()


def test_values_outside_the_protocol_become_an_error_not_a_crash() -> None:
    """The supervisor encodes what a runner reports; a cell can forge that report."""
    frame = proto.result_frame(1, "bogus", "", "", False, False, 0.0, "weird", "nope")
    _, fields = proto.parse_reply(body(frame))
    assert fields is not None
    assert (fields["status"], fields["state"], fields["reason"]) == ("error", "lost", "crash")


def test_a_frame_announcing_more_than_the_limit_is_refused_at_its_header() -> None:
    buffer = bytearray(proto.HEADER.pack(proto.reply_limit(10) + 1))  # no body yet
    with pytest.raises(ValueError, match="announced"):
        proto.unframe_bodies(buffer, proto.reply_limit(10))
    frame = proto.result_frame(
        1, "completed", "x" * 10 + "<output cut>", "é" * 10, True, False, 0.1, "kept", None
    )
    assert proto.unframe_bodies(bytearray(frame), proto.reply_limit(10))


DONE = {"op": "done", "rid": 3, "status": "completed", "reason": None, "duration": 0.5}


@pytest.mark.parametrize(
    "change",
    [
        {"rid": "3"},
        {"status": "fine"},
        {"reason": "bored"},
        {"duration": float("nan")},
        {"duration": "1"},
        {"record": [1, 2]},
        {"record": [-1, 2, 0.1, 0.0]},
        {"record": "x"},
        {"lost": 5},
        {"lost": "x" * 1001},
    ],
)
def test_control_messages_a_runner_would_not_send_are_rejected(change: dict[str, object]) -> None:
    assert proto.valid_done(DONE)
    assert proto.valid_done({**DONE, "record": [3, 10, 0.5, 12.0], "lost": "why\n"})
    assert not proto.valid_done({**DONE, **change})
