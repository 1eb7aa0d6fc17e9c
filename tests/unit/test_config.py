"""The job config: YAML safety, layers and precedence, errors with lines, typed values."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from shardflow.config import (
    MAX_FILE_BYTES,
    JobConfig,
    LoadedConfig,
    apply_overrides,
    config_from_snapshot,
    job_config_schema,
    load_job_config,
    parse_value,
)
from shardflow.configtypes import Duration, Rate, Size, parse_duration, parse_rate, parse_size
from shardflow.errors import ClassRule, ConfigError, ConfigProblem
from shardflow.models import ErrorClass

DATA = Path(__file__).parent / "data" / "config"
MINIMAL = "name: t\nhandler: handlers:process\ninput: {path: data.jsonl}\n"
NO_USER = Path("/nonexistent/shardflow/config.yaml")


def load(
    path: Path,
    *sets: str,
    env: dict[str, str] | None = None,
    user: Path = NO_USER,
    cwd: Path | None = None,
) -> LoadedConfig:
    return load_job_config(path, sets, env=env or {}, user_config=user, cwd=cwd)


def write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path, *sets: str, **kwargs: Any) -> tuple[ConfigProblem, ...]:
    with pytest.raises(ConfigError) as info:
        load(path, *sets, **kwargs)
    return info.value.problems


def test_every_mistake_is_reported_at_once_with_its_line_and_field() -> None:
    path = DATA / "three_mistakes.yaml"
    problems = problems_of(path)
    assert [(p.line, p.column, p.field) for p in problems] == [
        (2, 1, "handler"),  # a missing key points at the mapping that lacks it
        (6, 3, "resources.slotz"),  # an unknown key points at the key
        (8, 14, "worker.lease_ttl"),
    ]
    assert {p.file for p in problems} == {str(path)}
    assert problems[0].message == "missing required key 'handler'"
    assert problems[1].message == "unknown key 'slotz'; did you mean 'slots'?"
    assert "expected a duration like 90s" in problems[2].message
    assert "'fast'" in problems[2].message


def test_unknown_key_without_a_close_match_lists_the_allowed_keys(tmp_path: Path) -> None:
    (problem,) = problems_of(write(tmp_path, MINIMAL + "aggregate: {zzz: 1}\n"))
    assert problem.message == "unknown key 'zzz' (allowed here: fan_in)"


def test_no_and_other_yaml11_booleans_stay_strings(tmp_path: Path) -> None:
    text = "name: no\nhandler: h:f\ninput: {path: d.jsonl}\nresources: {partition: off}\n"
    cfg = load(write(tmp_path, text)).config
    assert cfg.name == "no"
    assert cfg.resources.partition == "off"
    assert parse_value("no") == "no"
    assert parse_value("010") == 10  # YAML 1.2: no octal surprise
    assert parse_value("true") is True
    assert parse_value("~") is None
    assert parse_value("") is None
    assert parse_value("[a, 1]") == ["a", 1]
    assert parse_value("*.jsonl") == "*.jsonl"  # not YAML (an undefined alias): kept as text
    assert parse_value("job #1") == "job #1"  # not cut at a YAML comment
    assert parse_value("'4'") == "4"  # quoting forces a string


@pytest.mark.parametrize(
    "value",
    ["!!python/object/apply:os.system ['true']", "!foo bar", "!!str 5", "! x"],
)
def test_yaml_tags_are_refused(tmp_path: Path, value: str) -> None:
    (problem,) = problems_of(write(tmp_path, MINIMAL + f"secrets: [{value}]\n"))
    assert "tags" in problem.message
    assert problem.line == 4


def test_a_tag_in_a_set_value_is_refused(tmp_path: Path) -> None:
    (problem,) = problems_of(write(tmp_path, MINIMAL), "name=!!python/name:os.system")
    assert (problem.file, problem.field) == ("--set", "name")
    assert "tags" in problem.message


def test_too_many_aliases_are_refused(tmp_path: Path) -> None:
    lines = ["a: &a x"] + [f"k{i}: *a" for i in range(101)]
    (problem,) = problems_of(write(tmp_path, MINIMAL + "\n".join(lines) + "\n"))
    assert "more than 100 aliases" in problem.message


def test_alias_bomb_within_the_alias_count_is_refused(tmp_path: Path) -> None:
    # 9 levels of 9 aliases: 81 aliases that would expand to 9**9 nodes
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    (problem,) = problems_of(write(tmp_path, MINIMAL + "\n".join(lines) + "\n"))
    assert "expands to more than 10000 nodes" in problem.message


@pytest.mark.parametrize(
    "nested",
    [
        "x: " + "[" * 5_000 + "]" * 5_000,  # flow lists: quadratic to parse in full
        "x: " + "{a: " * 5_000 + "1" + "}" * 5_000,  # flow mappings
        "x:\n" + "".join(" " * (i + 1) + f"k{i}:\n" for i in range(300)),  # block mappings
        "x:\n" + "- " * 5_000 + "1",  # block sequences
    ],
    ids=["flow-lists", "flow-mappings", "block-mappings", "block-lists"],
)
def test_deep_nesting_is_refused_in_under_a_second_with_its_line(
    tmp_path: Path, nested: str
) -> None:
    path = write(tmp_path, MINIMAL + nested + "\n")
    started = time.monotonic()
    (problem,) = problems_of(path)
    assert time.monotonic() - started < 1.0
    assert "nested more than 64 deep" in problem.message
    assert problem.line is not None
    assert problem.line > MINIMAL.count("\n")


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    (problem,) = problems_of(write(tmp_path, MINIMAL + "secrets: &s [*s]\n"))
    assert "recursive alias" in problem.message


def test_a_few_aliases_work(tmp_path: Path) -> None:
    text = MINIMAL + "resources: {memory: &m 4GiB}\nslurm: {log_dir: logs}\nworker: {scratch: *m}\n"
    cfg = load(write(tmp_path, text)).config
    assert cfg.resources.memory == 4 * 1024**3
    assert cfg.worker.scratch == "4GiB"


def test_files_over_one_mib_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "#" * MAX_FILE_BYTES + "\n")
    (problem,) = problems_of(path)
    assert "over 1 MiB" in problem.message


def test_duplicate_keys_are_errors_with_their_line(tmp_path: Path) -> None:
    text = MINIMAL + "resources:\n  cpus: 1\n  cpus: 2\nretry: {max_attempts: 0}\n"
    duplicate, other = problems_of(write(tmp_path, text))
    assert (duplicate.line, duplicate.field) == (6, "resources.cpus")
    assert "duplicate key 'cpus' (first set on line 5)" in duplicate.message
    assert (other.line, other.field) == (7, "retry.max_attempts")  # and validation went on


def test_yaml_syntax_errors_have_a_line(tmp_path: Path) -> None:
    (problem,) = problems_of(write(tmp_path, MINIMAL + "retry: {max_attempts: 4\n"))
    assert problem.line is not None
    assert problem.line >= 4
    assert problem.message.startswith("YAML syntax error")


def test_a_missing_job_file_says_so(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path / "nope.yaml")
    assert "cannot read the file" in problem.message


def test_extends_merges_and_the_child_wins() -> None:
    loaded = load(DATA / "child.yaml")
    cfg = loaded.config
    assert cfg.name == "from child"
    assert cfg.resources.slots == 8
    assert cfg.resources.memory == 4 * 1024**3  # kept from the base
    assert cfg.retry.max_attempts == 2
    # batching is one-of: the child's choice replaces the base's, never merges with it
    assert (cfg.batching.records, cfg.batching.bytes) == (None, 64 * 1024**2)
    assert loaded.origins["resources.memory"] == f"file:{DATA / 'base.yaml'}:8"
    assert loaded.origins["resources.slots"] == f"file:{DATA / 'child.yaml'}:6"


def test_extends_cycle_is_refused() -> None:
    (problem,) = problems_of(DATA / "cycle_a.yaml")
    assert problem.field == "extends"
    assert "cycle" in problem.message


def test_errors_in_a_base_point_into_the_base() -> None:
    (problem,) = problems_of(DATA / "bad_child.yaml")
    assert (problem.file, problem.line, problem.field) == (
        str(DATA / "bad_base.yaml"),
        5,
        "worker.lease_ttl",
    )


def test_extends_a_missing_file(tmp_path: Path) -> None:
    (problem,) = problems_of(write(tmp_path, "extends: gone.yaml\n" + MINIMAL))
    assert (problem.line, problem.field) == (1, "extends")
    assert "no such file 'gone.yaml'" in problem.message


def test_set_values_are_typed_yaml(tmp_path: Path) -> None:
    loaded = load(
        write(tmp_path, MINIMAL),
        "resources.slots=4",
        "name=no",
        "input.path=[a.jsonl, b.jsonl]",
        "batching.bytes=1MiB",
    )
    cfg = loaded.config
    assert cfg.resources.slots == 4
    assert cfg.name == "no"
    assert cfg.input.path == [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]
    assert (cfg.batching.records, cfg.batching.bytes) == (None, 1024**2)
    assert loaded.origins["resources.slots"] == "cli"


def test_set_unknown_or_malformed_keys_are_config_errors(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, MINIMAL), "resources.slotz=4", "slots", "name.x=1")
    by_field = {p.field: p.message for p in problems}
    assert by_field["resources.slotz"] == "unknown key 'slotz' in resources; did you mean 'slots'?"
    assert by_field[""] == "expected key.path=value"
    assert by_field["name.x"] == "name is a single value; it has no key 'x'"
    assert {p.file for p in problems} == {"--set"}


def test_a_bad_set_value_names_its_source(tmp_path: Path) -> None:
    (problem,) = problems_of(write(tmp_path, MINIMAL), "resources.slots=many")
    assert (problem.file, problem.line, problem.field) == ("--set", None, "resources.slots")
    assert "'many'" in problem.message


def test_apply_overrides_on_plain_data() -> None:
    data = {"name": "x", "rate_limits": {"geo": {"rate": "5/s"}}}
    out = apply_overrides(data, ["rate_limits.geo.burst=10", "logging.level=debug"])
    assert out == {
        "name": "x",
        "rate_limits": {"geo": {"rate": "5/s", "burst": 10}},
        "logging": {"level": "debug"},
    }
    assert data["rate_limits"] == {"geo": {"rate": "5/s"}}  # not mutated
    with pytest.raises(ConfigError, match="unknown key 'nope'"):
        apply_overrides(data, ["nope=1"])


def test_precedence_cli_over_env_over_file_over_user(tmp_path: Path) -> None:
    user = write(tmp_path, "resources: {slots: 1, memory: 8GiB, cpus: 3}\n", "user.yaml")
    job = write(tmp_path, MINIMAL + "resources: {slots: 2, cpus: 2}\n")
    env = {
        "SHARDFLOW_RESOURCES__SLOTS": "3",
        "SHARDFLOW_BACKENDS__STATE": "dynamodb://jobs",
        "SHARDFLOW_BACKENDS__QUEUE": "sqs://jobs",  # DynamoDB state needs a queue
        "SHARDFLOW_FAULT": "ignored:1",  # no "__": not a config variable
    }
    loaded = load(job, "resources.slots=5", env=env, user=user)
    cfg = loaded.config
    assert (cfg.resources.slots, cfg.resources.cpus, cfg.resources.memory) == (5, 2, 8 * 1024**3)
    assert cfg.backends.state == "dynamodb://jobs"
    assert loaded.origins["resources.slots"] == "cli"
    assert loaded.origins["resources.cpus"] == f"file:{job}:4"
    assert loaded.origins["resources.memory"] == f"user:{user}:1"
    assert loaded.origins["backends.state"] == "env:SHARDFLOW_BACKENDS__STATE"
    assert loaded.origins["resources.time"] == "default"
    without_cli = load(job, env=env, user=user)
    assert without_cli.config.resources.slots == 3
    assert without_cli.origins["resources.slots"] == "env:SHARDFLOW_RESOURCES__SLOTS"


def test_an_unknown_env_key_is_an_error_naming_the_variable(tmp_path: Path) -> None:
    (problem,) = problems_of(write(tmp_path, MINIMAL), env={"SHARDFLOW_RESOURCES__SLOTZ": "2"})
    assert problem.file == "env:SHARDFLOW_RESOURCES__SLOTZ"
    assert "did you mean 'slots'" in problem.message


def test_user_config_is_found_through_xdg_config_home(tmp_path: Path) -> None:
    (tmp_path / "xdg" / "shardflow").mkdir(parents=True)
    write(tmp_path / "xdg" / "shardflow", "logging: {level: debug}\n", "config.yaml")
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    loaded = load_job_config(write(tmp_path, MINIMAL), env=env, cwd=tmp_path)
    assert loaded.config.logging.level == "DEBUG"
    assert loaded.origins["logging.level"].startswith("user:")


def test_user_config_may_only_set_machine_sections(tmp_path: Path) -> None:
    user = write(tmp_path, "name: mine\nslurm: {requeue: false}\n", "user.yaml")
    (problem,) = problems_of(write(tmp_path, MINIMAL), user=user)
    assert (problem.file, problem.line, problem.field) == (str(user), 1, "name")
    assert "only backends, resources, slurm, logging, worker" in problem.message


def test_paths_resolve_against_the_job_file_and_backends_against_cwd(tmp_path: Path) -> None:
    jobdir, workdir = tmp_path / "jobs", tmp_path / "work"
    jobdir.mkdir()
    text = (
        "name: t\nhandler: lib/h.py:process\n"
        "input: {path: [data/*.jsonl, /abs/x.csv, 's3://bucket/in/*.jsonl']}\n"
        "backends: {storage: store, state: 'st.db?busy_timeout=5'}\n"
    )
    cfg = load(write(jobdir, text), cwd=workdir).config
    assert cfg.handler == f"{jobdir}/lib/h.py:process"
    assert cfg.input.path == [f"{jobdir}/data/*.jsonl", "/abs/x.csv", "s3://bucket/in/*.jsonl"]
    assert cfg.backends.storage == f"file://{workdir}/store"
    assert cfg.backends.state == f"sqlite://{workdir}/st.db?busy_timeout=5"
    assert cfg.backends.queue is None
    module_form = load(write(jobdir, MINIMAL), cwd=workdir).config
    assert module_form.handler == "handlers:process"  # found through base_dir on sys.path


def test_loaded_config_knows_its_file(tmp_path: Path) -> None:
    loaded = load(write(tmp_path, MINIMAL))
    assert (loaded.path, loaded.base_dir) == (tmp_path / "job.yaml", tmp_path)


@pytest.mark.parametrize(
    ("key", "value", "field", "message"),
    [
        (
            "worker",
            "{lease_ttl: 30s, heartbeat: 30s}",
            "worker.heartbeat",
            "shorter than lease_ttl",
        ),
        ("retry", "{backoff: {base: 10m, cap: 1m}}", "retry.backoff.base", "must not exceed cap"),
        ("batching", "{records: 5, bytes: 1MiB}", "batching", "exactly one of records"),
        ("batching", "{}", "batching", "exactly one of records"),
        ("backends", "{state: 'redis://x'}", "backends.state", "unsupported state location"),
        ("backends", "{storage: 's3://'}", "backends.storage", "unsupported storage location"),
        (
            "retry",
            "{rules: [{class: transient, message: '('}]}",
            "retry.rules[0].message",
            "regular",
        ),
        ("retry", "{rules: [{class: transient}]}", "retry.rules[0]", "needs exceptions"),
        ("retry", "{rules: [{class: flaky, exceptions: [E]}]}", "retry.rules[0].class", "'flaky'"),
        ("rate_limits", "{Geo API: {rate: 5/s}}", "rate_limits.Geo API", "invalid rate limit"),
        ("rate_limits", "{geo: {rate: 0/s}}", "rate_limits.geo.rate", "rate above zero"),
        ("resources", '{extra_sbatch: ["--x\\n--y"]}', "resources.extra_sbatch", "single line"),
        ("output", "{name: ../evil}", "output.name", "invalid output name"),
        ("output", "{name: failures}", "output.name", "taken by the job's failures file"),
        ("output", "{name: rejects}", "output.name", "taken by the job's rejects file"),
        ("output", "{schema: {a: int99}}", "output.schema.a", "unknown column type"),
        ("input", "{path: [], format: xml}", "input.path", "a list of them"),
        ("input", "{path: x, format: xml}", "input.format", "got 'xml'"),
        ("handler", "not-a-ref", "handler", "expected 'module.path:function'"),
        ("name", "''", "name", "at least 1 character"),
        ("input", "data.jsonl", "input", "expected a mapping (key: value, …), got 'data.jsonl'"),
    ],
)
def test_semantic_and_value_checks(
    tmp_path: Path, key: str, value: str, field: str, message: str
) -> None:
    sections = {"name": "t", "handler": "h:f", "input": "{path: d.jsonl}", key: value}
    text = "".join(f"{k}: {v}\n" for k, v in sections.items())
    problems = problems_of(write(tmp_path, text))
    assert any(p.field == field and message in p.message for p in problems), problems
    assert all(p.line is not None for p in problems)


def test_rules_become_class_rules_and_burst_defaults_to_the_rate(tmp_path: Path) -> None:
    text = MINIMAL + (
        "retry:\n  rules:\n"
        "    - {class: transient, exceptions: [ReadTimeout], http_status: [429, 503]}\n"
        "    - {class: permanent, message: 'bad .* input'}\n"
        "rate_limits: {geo: {rate: 3000/min}, slow: {rate: 10/h}, big: {rate: 5/s, burst: 50}}\n"
    )
    cfg = load(write(tmp_path, text)).config
    assert cfg.retry.to_class_rules() == (
        ClassRule(ErrorClass.TRANSIENT, ("ReadTimeout",), None, (429, 503)),
        ClassRule(ErrorClass.PERMANENT, (), "bad .* input", ()),
    )
    limits = cfg.rate_limits
    assert (limits["geo"].rate, limits["geo"].burst) == (50.0, 50)
    assert (limits["slow"].burst, limits["big"].burst) == (1, 50)
    assert cfg.worker.heartbeat == pytest.approx(20.0)  # lease_ttl / 3


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        *[("90s", 90), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("250ms", 0.25)],
        *[("2d", 172800), (45, 45), (1.5, 1.5), ("12", 12), ("1h 30m", 5400), ("0.5h", 1800)],
    ],
)
def test_durations(text: Any, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        *[("64MiB", 64 * 2**20), ("1GiB", 2**30), ("500KB", 500_000), ("10B", 10)],
        *[(4096, 4096), ("2 gb", 2 * 10**9), ("1.5KiB", 1536), ("0", 0)],
    ],
)
def test_sizes(text: Any, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "rate"),
    [("50/s", 50), ("3000/min", 50), ("10/h", 10 / 3600), (2.5, 2.5), ("7", 7.0)],
)
def test_rates(text: Any, rate: float) -> None:
    assert parse_rate(text) == pytest.approx(rate)


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (parse_duration, "fast", "expected a duration like 90s"),
        (parse_duration, "-5s", "expected a duration"),
        (parse_duration, True, "expected a duration"),
        (parse_size, "10k", "a bare k/M/G is ambiguous"),
        (parse_size, "5 parsecs", "expected a size like 64MiB"),
        (parse_size, -1, "zero bytes or more"),
        (parse_rate, "5/fortnight", "expected a rate"),
        (parse_rate, 0, "above zero"),
    ],
)
def test_bad_values_say_what_was_expected(parse: Any, text: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse(text)


class _Values(BaseModel):
    duration: Duration
    size: Size
    rate: Rate


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


@given(
    parts=st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(list(_UNITS))), min_size=1),
    size=st.integers(0, 2**50)
    | st.builds(
        lambda n, u: f"{n}{u}", st.integers(0, 4096), st.sampled_from(["B", "KB", "MiB", "GiB"])
    ),
    rate=st.floats(1e-6, 1e9)
    | st.builds(lambda n, u: f"{n}/{u}", st.integers(1, 10**6), st.sampled_from(["s", "min", "h"])),
)
def test_typed_values_dump_to_numbers_and_revalidate(
    parts: list[tuple[int, str]], size: Any, rate: Any
) -> None:
    duration = "".join(f"{n}{unit}" for n, unit in parts)
    model = _Values(duration=duration, size=size, rate=rate)
    assert model.duration == pytest.approx(sum(n * _UNITS[u] for n, u in parts))
    dumped = model.model_dump(mode="json")
    assert all(isinstance(v, int | float) for v in dumped.values())
    assert _Values.model_validate(json.loads(json.dumps(dumped))) == model


def test_snapshot_round_trip(tmp_path: Path) -> None:
    text = MINIMAL + (
        "retry: {rules: [{class: permanent, exceptions: [KeyError]}]}\n"
        "rate_limits: {geo: {rate: 50/s}}\n"
        "output: {schema: {id: int64, at: 'timestamp[us]'}}\n"
        "worker: {item_timeout: 2m, lease_ttl: 90s}\n"
        "batching: {bytes: 64MiB}\n"
    )
    cfg = load(write(tmp_path, text)).config
    for by_alias in (True, False):
        snapshot = json.loads(json.dumps(cfg.model_dump(mode="json", by_alias=by_alias)))
        assert config_from_snapshot(snapshot) == cfg


def test_a_bad_snapshot_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_snapshot({"name": "x"})
    assert {p.field for p in info.value.problems} == {"handler", "input"}


def test_schema_is_json_with_a_description_for_every_key() -> None:
    schema = json.loads(json.dumps(job_config_schema()))
    assert schema["title"] == "shardflow job"
    assert {"name", "handler", "input", "extends"} <= set(schema["properties"])
    assert set(schema["required"]) == {"name", "handler", "input"}
    objects = [d for d in [schema, *schema["$defs"].values()] if d.get("type") == "object"]
    assert len(objects) >= 15  # JobConfig and its sections
    for obj in objects:
        for key, prop in obj["properties"].items():
            assert prop.get("description"), f"{obj.get('title')}.{key} has no description"
    assert "class" in schema["$defs"]["ClassRuleConfig"]["properties"]
    assert "schema" in schema["$defs"]["OutputConfig"]["properties"]


def test_defaults_match_the_design(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, MINIMAL)).config
    assert cfg.batching.records == 10000
    assert (cfg.retry.max_attempts, cfg.retry.backoff.base, cfg.retry.backoff.cap) == (4, 2, 300)
    assert (cfg.resources.memory, cfg.resources.time) == (2 * 1024**3, 3600)
    assert (cfg.output.format, cfg.output.name, cfg.output.key_column) == (
        "parquet",
        "results",
        "_key",
    )
    assert (cfg.backends.executor, cfg.aggregate.fan_in, cfg.logging.level) == (
        "local",
        512,
        "INFO",
    )
    assert math.isclose(cfg.input.max_record_bytes, 2**20)
    assert JobConfig.model_fields["secrets"].description
