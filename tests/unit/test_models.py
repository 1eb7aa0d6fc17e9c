"""Models: lossless JSON round-trips (also through the state-store codec) and the state
machines of tasks and jobs."""

from __future__ import annotations

import dataclasses
import enum
import inspect
import itertools
import types
import typing
from collections.abc import Mapping
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardflow import models
from shardflow.errors import IllegalTransitionError, ManifestError
from shardflow.models import (
    SCHEMA_VERSION,
    Event,
    Job,
    JobStatus,
    Task,
    TaskStatus,
    check_transition,
    from_dict,
    item_key,
    to_dict,
)
from shardflow.ratelimit.base import BucketState
from shardflow.statestore.codec import decode_model, encode_model

MODELS: list[type[Any]] = [
    cls
    for _name, cls in inspect.getmembers(models, inspect.isclass)
    if dataclasses.is_dataclass(cls) and cls.__module__ == models.__name__
]
STORED: list[type[Any]] = [*MODELS, BucketState]

_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
_floats = st.floats(allow_nan=False, allow_infinity=False)  # JSON has no NaN or inf
_json: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | _floats | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=10,
)


def _strategy(tp: Any) -> st.SearchStrategy[Any]:
    """Values of a model field's type that JSON can hold."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*[_strategy(a) for a in typing.get_args(tp)])
    if tp is type(None):
        return st.none()
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return st.sampled_from(list(tp))
    if origin is tuple:
        return st.lists(_strategy(typing.get_args(tp)[0]), max_size=4).map(tuple)
    if origin is Mapping:
        return st.dictionaries(_text, _json, max_size=4)
    simple: dict[Any, st.SearchStrategy[Any]] = {
        str: _text,
        bool: st.booleans(),
        int: st.integers(-(2**63), 2**63 - 1),
        float: _floats,
    }
    return simple[tp]


def _model(cls: type[Any]) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls)
    fields = {f.name: _strategy(hints[f.name]) for f in dataclasses.fields(cls)}
    if "schema_version" in fields:
        fields["schema_version"] = st.just(SCHEMA_VERSION)
    return st.builds(cls, **fields)


def test_every_model_is_covered() -> None:
    names = {cls.__name__ for cls in MODELS}
    assert names >= {"Batch", "Task", "Job", "TaskGroup", "Attempt", "Event"}


@pytest.mark.parametrize("cls", STORED, ids=lambda c: c.__name__)
@settings(deadline=None, max_examples=60)
@given(data=st.data())
def test_json_round_trip_is_lossless(cls: type[Any], data: st.DataObject) -> None:
    obj = data.draw(_model(cls))
    as_dict = to_dict(obj)
    assert as_dict["schema_version"] == SCHEMA_VERSION
    raw = orjson.dumps(as_dict)
    assert from_dict(cls, orjson.loads(raw)) == obj
    # the adapters' fast codec writes the same bytes and reads the same model
    assert encode_model(obj) == raw
    assert decode_model(cls, raw) == obj


def test_float_fields_read_back_as_floats() -> None:
    raw = encode_model(Task(job_id="j", task_id="t", batch_id="b")).replace(
        b'"updated_at":0.0', b'"updated_at":3'
    )
    for task in (from_dict(Task, orjson.loads(raw)), decode_model(Task, raw)):
        assert task.updated_at == 3.0
        assert isinstance(task.updated_at, float)


@pytest.mark.parametrize("decode", [from_dict, decode_model], ids=["from_dict", "codec"])
def test_unknown_fields_and_schema_versions_are_refused(decode: Any) -> None:
    data = to_dict(Event(job_id="j", kind="submitted", at=1.0))
    with pytest.raises(ManifestError, match="unknown fields"):
        decode(Event, {**data, "surprise": 1})
    with pytest.raises(ManifestError, match="schema_version"):
        decode(Event, {**data, "schema_version": SCHEMA_VERSION + 1})


def test_item_key_is_the_id_field_else_batch_and_ordinal() -> None:
    assert item_key("b0001", 7) == "b0001:7"
    assert item_key("b0001", 7, 42) == "42"
    assert item_key("b0001", 7, "user-9") == "user-9"


# -- state machines ---------------------------------------------------------------------

T = TaskStatus
LEGAL_TASK = {
    (T.PENDING, T.LEASED),
    (T.PENDING, T.CANCELLED),
    (T.LEASED, T.LEASED),  # a heartbeat
    (T.LEASED, T.SUCCEEDED),
    (T.LEASED, T.RETRY_WAIT),
    (T.LEASED, T.FAILED),
    (T.LEASED, T.PENDING),  # lease expired or preempted
    (T.LEASED, T.CANCELLED),
    (T.RETRY_WAIT, T.LEASED),
    (T.RETRY_WAIT, T.PENDING),
    (T.RETRY_WAIT, T.CANCELLED),
    (T.FAILED, T.PENDING),  # shardflow retry
    (T.SUCCEEDED, T.PENDING),  # repair: the committed result failed verification
}

J = JobStatus
LEGAL_JOB = {(s, s) for s in J} | {
    (J.PENDING, J.SPLITTING),
    (J.PENDING, J.CANCELLED),
    (J.PENDING, J.FAILED),
    (J.SPLITTING, J.RUNNING),
    (J.SPLITTING, J.CANCELLED),
    (J.SPLITTING, J.FAILED),
    (J.RUNNING, J.AGGREGATING),
    (J.RUNNING, J.FAILED),
    (J.RUNNING, J.CANCELLED),
    (J.AGGREGATING, J.SUCCEEDED),
    (J.AGGREGATING, J.FAILED),
    (J.AGGREGATING, J.CANCELLED),
    (J.AGGREGATING, J.RUNNING),
    (J.SUCCEEDED, J.RUNNING),  # failures re-driven
    (J.FAILED, J.RUNNING),
}


# TaskStatus.PENDING == JobStatus.PENDING (both are the str "PENDING"), so pairs of the
# two kinds must never share a set: they are kept in separate lists here
LEGAL = sorted(LEGAL_TASK) + sorted(LEGAL_JOB)
ILLEGAL = (
    [pair for pair in itertools.product(T, T) if pair not in LEGAL_TASK]
    + [pair for pair in itertools.product(J, J) if pair not in LEGAL_JOB]
    + list(itertools.product(T, J))
    + list(itertools.product(J, T))
)


def _pair_id(pair: tuple[enum.Enum, enum.Enum]) -> str:
    return "-".join(f"{type(s).__name__}.{s.name}" for s in pair)


@pytest.mark.parametrize("pair", LEGAL, ids=_pair_id)
def test_legal_transitions_pass(pair: tuple[Any, Any]) -> None:
    check_transition(*pair)


@pytest.mark.parametrize("pair", ILLEGAL, ids=_pair_id)
def test_every_other_transition_raises(pair: tuple[Any, Any]) -> None:
    with pytest.raises(IllegalTransitionError, match="illegal transition"):
        check_transition(*pair)


def test_the_tables_cover_every_pair() -> None:
    assert len(LEGAL) + len(ILLEGAL) == (len(T) + len(J)) ** 2


def test_final_states() -> None:
    assert {s for s in T if s.is_final} == {T.SUCCEEDED, T.FAILED, T.CANCELLED}
    assert {s for s in J if s.is_final} == {J.SUCCEEDED, J.FAILED, J.CANCELLED}


def test_job_defaults_carry_the_schema_version() -> None:
    job = Job(job_id="j", name="n")
    assert (job.status, job.version, job.schema_version) == (J.PENDING, 0, SCHEMA_VERSION)
