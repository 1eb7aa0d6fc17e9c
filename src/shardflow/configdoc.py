"""The configuration reference (docs/config.md), generated from the JSON Schema.

``python -m shardflow.configdoc > docs/config.md`` rewrites it; a test checks that the
committed page matches, so a changed default changes its documentation in the same commit.
"""

from __future__ import annotations

import json
from typing import Any

HEADER = """# Configuration reference

Every key of a job file, with its default. Generated from the JSON Schema
(`shardflow schema`) by `python -m shardflow.configdoc > docs/config.md`; do not edit by
hand. Durations take `250ms`, `90s`, `5m`, `1h30m` or seconds; sizes take `512KB`,
`64MiB`, `2GiB` or bytes; rates take `50/s`, `3000/min`, `10/h` or a number per second.

Values come from, highest first: `--set key=value`, environment variables
`SHARDFLOW_<SECTION>__<KEY>` (for example `SHARDFLOW_RESOURCES__SLOTS=8`), the job file
(and the file it `extends:`), `~/.config/shardflow/config.yaml` (sections backends,
resources, slurm, logging, worker), then these defaults. `shardflow config show JOB.yaml`
prints each value with its origin.
"""


def _type(prop: dict[str, Any]) -> str:
    if "$ref" in prop:
        return "section"
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    if "anyOf" in prop:
        return " or ".join(_type(p) for p in prop["anyOf"])
    if prop.get("type") == "array":
        return f"list of {_type(prop.get('items', {}))}"
    if prop.get("type") == "object" and "additionalProperties" in prop:
        return f"map of {_type(prop['additionalProperties'])}"
    return str(prop.get("type", "any"))


def _default(prop: dict[str, Any]) -> str:
    if "default" not in prop:
        return "required" if prop.get("_required") else "—"
    return f"`{json.dumps(prop['default'])}`"


def render(schema: dict[str, Any]) -> str:
    defs = schema.get("$defs", {})
    lines = [HEADER, "| key | type | default | meaning |", "| --- | --- | --- | --- |"]

    def walk(props: dict[str, Any], required: list[str], prefix: str) -> None:
        for name, prop in props.items():
            key = f"{prefix}{name}"
            ref = prop.get("$ref") or next(
                (p["$ref"] for p in prop.get("anyOf", []) if "$ref" in p), None
            )
            desc = str(prop.get("description", "")).replace("|", "\\|").replace("\n", " ")
            if ref is not None and "additionalProperties" not in prop:
                section = defs[ref.rsplit("/", 1)[-1]]
                lines.append(f"| **`{key}`** | section | | {desc} |")
                walk(section.get("properties", {}), section.get("required", []), f"{key}.")
                continue
            shown = dict(prop, _required=name in required)
            lines.append(f"| `{key}` | {_type(prop)} | {_default(shown)} | {desc} |")

    walk(schema.get("properties", {}), schema.get("required", []), "")
    return "\n".join(lines) + "\n"


def main() -> None:
    from shardflow.config import job_config_schema

    print(render(job_config_schema()), end="")


if __name__ == "__main__":
    main()
