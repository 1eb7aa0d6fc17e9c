"""The three handler forms a job file can name, loaded and run the way a slot runs them,
and the context a handler receives."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import Any

import pytest

from shardflow import batch_handler
from shardflow.errors import HandlerLoadError
from shardflow.worker.context import RateLimiter, TaskContext
from shardflow.worker.handler import adapt_handler, check_output, load_handler


def _write(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def _ctx(limiter: RateLimiter | None = None) -> TaskContext:
    ctx = TaskContext("job-1", "t000001", "b000001", 1, "slot-0", logging.getLogger("t"))
    if limiter is not None:
        ctx.limiter = limiter
    return ctx


def test_a_function_in_a_file_relative_to_the_job_folder(tmp_path: Path) -> None:
    _write(tmp_path / "enrich.py", "def process(record, ctx):\n    return {'id': record['id']}\n")
    handler = load_handler("enrich.py:process", tmp_path)
    assert not handler.per_batch
    assert handler.run_one({"id": 7}, _ctx()) == {"id": 7}


def test_a_module_path_is_imported_from_the_job_folder(tmp_path: Path) -> None:
    pkg = tmp_path / "handlers_pkg_forms"
    pkg.mkdir()
    _write(pkg / "__init__.py", "")
    _write(pkg / "mod.py", "def fanout(record, ctx):\n    return [record, record]\n")
    handler = load_handler("handlers_pkg_forms.mod:fanout", tmp_path)
    assert handler.run_one({"a": 1}, _ctx()) == [{"a": 1}, {"a": 1}]


def test_a_batch_handler_gets_the_records_together_and_answers_one_per_record() -> None:
    seen: list[int] = []

    @batch_handler
    def double(records: list[dict[str, Any]], ctx: TaskContext) -> list[dict[str, Any] | None]:
        seen.append(len(records))
        return [None if r["n"] < 0 else {"n": 2 * r["n"]} for r in records]

    handler = adapt_handler(double, "double")
    assert handler.per_batch
    assert handler.run_batch([{"n": 1}, {"n": -1}, {"n": 3}], _ctx()) == [
        {"n": 2},
        None,
        {"n": 6},
    ]
    # a single item (retrying one item alone) goes through the same function
    assert handler.run_one({"n": 5}, _ctx()) == {"n": 10}
    assert seen == [3, 1]


def test_a_batch_handler_that_drops_a_record_is_an_error() -> None:
    handler = adapt_handler(batch_handler(lambda records, ctx: records[:-1]), "short")
    with pytest.raises(TypeError, match="returned 1 outputs for 2 records"):
        handler.run_batch([{"a": 1}, {"a": 2}], _ctx())


def test_a_class_handler_has_setup_process_and_teardown() -> None:
    class Client:
        def setup(self, ctx: TaskContext) -> None:
            self.prefix = "x-"

        def process(self, record: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
            return {"v": self.prefix + record["v"]}

        def teardown(self, ctx: TaskContext) -> None:
            self.prefix = ""

    handler = adapt_handler(Client, "Client")
    assert handler.setup is not None
    assert handler.teardown is not None
    handler.setup(_ctx())
    assert handler.run_one({"v": "a"}, _ctx()) == {"v": "x-a"}
    handler.teardown(_ctx())
    handler.close()  # nothing outside the process to release


def test_a_class_with_process_batch_is_a_batch_handler() -> None:
    class Batched:
        def process_batch(self, records: list[dict[str, Any]], ctx: TaskContext) -> list[None]:
            return [None for _ in records]

    handler = adapt_handler(Batched, "Batched")
    assert handler.per_batch
    assert handler.setup is None
    assert handler.run_batch([{}, {}], _ctx()) == [None, None]


@pytest.mark.parametrize("out", [{"a": 1}, [{"a": 1}, {"b": 2}], [], None])
def test_outputs_a_handler_may_return(out: Any) -> None:
    assert check_output(out) == out


@pytest.mark.parametrize(("out", "name"), [("text", "str"), ([{"a": 1}, 2], "list"), (3, "int")])
def test_any_other_output_is_refused_with_its_type(out: Any, name: str) -> None:
    with pytest.raises(TypeError, match=f"not {name}"):
        check_output(out)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon_here", "expected 'module:function'"),
        (":process", "expected 'module:function'"),
        ("enrich.py:", "expected 'module:function'"),
        ("missing.py:process", "does not exist"),
        ("enrich.py:nope", "enrich.py has no 'nope' \\(it defines NoProcess\\)"),
        ("enrich.py:VALUE", "is a int, not a function or class"),
        ("enrich.py:NoProcess", "needs a process"),
    ],
)
def test_a_wrong_handler_spec_is_a_handler_load_error(
    tmp_path: Path, spec: str, message: str
) -> None:
    _write(
        tmp_path / "enrich.py",
        """
        VALUE = 3

        class NoProcess:
            def setup(self, ctx):
                pass
        """,
    )
    with pytest.raises(HandlerLoadError, match=message):
        load_handler(spec, tmp_path)


class _CountingLimiter(RateLimiter):
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float]] = []

    def acquire(self, name: str, tokens: float = 1.0, timeout: float | None = None) -> None:
        self.calls.append(("acquire", name, tokens))

    def report_throttled(self, name: str) -> None:
        self.calls.append(("throttled", name, 0.0))


def test_ctx_limited_acquires_before_each_call_and_passes_arguments_through() -> None:
    limiter = _CountingLimiter()
    ctx = _ctx(limiter)

    @ctx.limited("geo_api", tokens=2)
    def lookup(city: str, *, country: str) -> str:
        limiter.calls.append(("call", city, 0.0))
        return f"{city}, {country}"

    assert lookup("Oslo", country="NO") == "Oslo, NO"
    assert lookup("Lima", country="PE") == "Lima, PE"
    assert limiter.calls == [
        ("acquire", "geo_api", 2),
        ("call", "Oslo", 0.0),
        ("acquire", "geo_api", 2),
        ("call", "Lima", 0.0),
    ]
    ctx.report_throttled("geo_api")
    assert limiter.calls[-1] == ("throttled", "geo_api", 0.0)
    # each call is counted for the attempt's api_calls / api_ms metrics
    assert ctx.api["api_calls"] == 2
    assert ctx.api["api_ms"] >= 0


def test_a_limited_call_that_raises_is_still_counted() -> None:
    ctx = _ctx(_CountingLimiter())

    @ctx.limited("geo_api")
    def lookup() -> None:
        raise ConnectionError("reset")

    with pytest.raises(ConnectionError):
        lookup()
    assert ctx.api["api_calls"] == 1


def test_ctx_metrics_add_up_per_attempt() -> None:
    ctx = _ctx()
    ctx.metric("api_calls", 1)
    ctx.metric("api_calls", 2)
    ctx.metric("bytes", 1.5)
    assert ctx.metrics == {"api_calls": 3.0, "bytes": 1.5}


def test_without_rate_limits_ctx_acquire_grants_at_once() -> None:
    ctx = _ctx()
    ctx.acquire("anything", 10, timeout=0)
    ctx.report_throttled("anything")
    assert ctx.limiter.metrics() == {}
    ctx.limiter.close()
    assert ctx.should_stop() is False
