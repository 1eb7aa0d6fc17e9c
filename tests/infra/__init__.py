"""Helpers for the infrastructure tests: render the policy templates, evaluate policies.

``infra/policies/*.json`` are the single source of truth for every IAM, bucket, queue and
key policy. Terraform renders them with ``templatefile()`` (``modules/policy``);
:func:`render_policy` renders them the same way here, so the tests exercise the documents
Terraform applies. Only the template syntax both sides implement is accepted:
``${name}`` (a string), ``${jsonencode(name)}`` (any JSON value) and ``$${`` (a literal
``${``, used for IAM policy variables such as ``${aws:PrincipalTag/shardflow-job}``).
Like ``modules/policy``, a statement whose ``Resource`` or ``Principal`` rendered as an
empty list is dropped.

:func:`decide` is a small IAM policy evaluator for the parts of the policy language our
documents use (actions, resources and principals with wildcards, policy variables, and
the condition operators listed in :data:`_OPERATORS`). It exists because moto does not
evaluate conditions or policy variables (see ``test_iam_policies.py``); it raises on
anything it does not implement instead of guessing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
POLICY_DIR = REPO / "infra" / "policies"
TERRAFORM_DIR = REPO / "infra" / "terraform"

JOB_TAG = "aws:PrincipalTag/shardflow-job"

_TEMPLATE_TOKEN = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_JSONENCODE = re.compile(r"^jsonencode\(([a-z_][a-z0-9_]*)\)$")
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def template_text(name: str) -> str:
    return (POLICY_DIR / f"{name}.json").read_text(encoding="utf-8")


def placeholders(text: str) -> set[str]:
    """Names of the variables a template refers to (policy variables excluded)."""
    found: set[str] = set()
    for match in _TEMPLATE_TOKEN.finditer(text):
        expr = match.group(1)
        if expr is None:
            continue
        encoded = _JSONENCODE.match(expr)
        found.add(encoded.group(1) if encoded else expr)
    return found


def render_text(text: str, variables: Mapping[str, Any]) -> str:
    """Render a template as ``templatefile()`` does; ValueError on unsupported syntax."""
    if "%{" in text.replace("%%{", ""):
        raise ValueError("template directives (%{...}) are not supported")

    def substitute(match: re.Match[str]) -> str:
        expr = match.group(1)
        if expr is None:  # "$${" is the escape for a literal "${"
            return "${"
        encoded = _JSONENCODE.match(expr)
        if encoded:
            return json.dumps(variables[encoded.group(1)])
        if not _NAME.match(expr):
            raise ValueError(f"unsupported template expression ${{{expr}}}")
        value = variables[expr]
        if not isinstance(value, str):
            raise ValueError(f"${{{expr}}} must be a string, use jsonencode() for {value!r}")
        return value

    return _TEMPLATE_TOKEN.sub(substitute, text)


def _non_empty(value: Any) -> bool:
    if isinstance(value, list):
        return len(value) > 0
    if isinstance(value, dict):
        return any(_non_empty(v) for v in value.values())
    return True


def render_policy(name: str, variables: Mapping[str, Any]) -> dict[str, Any]:
    """The policy document Terraform applies for ``infra/policies/{name}.json``."""
    document: dict[str, Any] = json.loads(render_text(template_text(name), variables))
    document["Statement"] = [
        s
        for s in document["Statement"]
        if _non_empty(s.get("Resource", "-")) and _non_empty(s.get("Principal", "-"))
    ]
    return document


# --- evaluation --------------------------------------------------------------------------

ContextValue = str | bool | int | float | list[str]


@dataclass(frozen=True)
class Request:
    """One API call as IAM sees it: action, resource, caller and request context."""

    action: str
    resource: str
    principal: str = "arn:aws:iam::123456789012:role/caller"
    context: Mapping[str, ContextValue] = field(default_factory=dict)


_VARIABLE = re.compile(r"\$\{([^}]+)\}")
_LITERAL_ESCAPES = {"*": "*", "?": "?", "$": "$"}


class _MissingVariable(Exception):
    """A policy variable names a key absent from the request: the element does not match."""


def _pattern(value: str, context: Mapping[str, ContextValue], *, wildcards: bool) -> str:
    """A regex for an IAM string: ``*``/``?`` wildcards, ``${key}`` policy variables."""
    out: list[str] = []
    pos = 0
    for match in _VARIABLE.finditer(value):
        out.append(_wild(value[pos : match.start()], wildcards))
        key = match.group(1)
        if key in _LITERAL_ESCAPES:
            out.append(re.escape(_LITERAL_ESCAPES[key]))
        elif key in context and isinstance(context[key], str):
            # a substituted value is literal (STS refuses '*' and '?' in tag values anyway)
            out.append(re.escape(str(context[key])))
        else:
            raise _MissingVariable(key)
        pos = match.end()
    out.append(_wild(value[pos:], wildcards))
    return "".join(out)


def _wild(text: str, wildcards: bool) -> str:
    if not wildcards:
        return re.escape(text)
    return "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text)


def _like(
    pattern: str, value: str, context: Mapping[str, ContextValue], *, ignore_case: bool = False
) -> bool:
    flags = re.IGNORECASE if ignore_case else 0
    return re.fullmatch(_pattern(pattern, context, wildcards=True), value, flags) is not None


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _string_match(like: bool) -> Callable[[str, str, Mapping[str, ContextValue]], bool]:
    def match(policy_value: str, request_value: str, ctx: Mapping[str, ContextValue]) -> bool:
        if like:
            return _like(policy_value, request_value, ctx)
        exact = _pattern(policy_value, ctx, wildcards=False)
        return re.fullmatch(exact, request_value) is not None

    return match


def _bool(policy_value: str, request_value: Any, _ctx: Mapping[str, ContextValue]) -> bool:
    return str(policy_value).lower() == str(request_value).lower()


def _numeric_less(policy_value: str, request_value: Any, _ctx: Mapping[str, ContextValue]) -> bool:
    return float(request_value) < float(policy_value)


# operator -> (value matcher, negated)
_OPERATORS: dict[str, tuple[Callable[[Any, Any, Mapping[str, ContextValue]], bool], bool]] = {
    "StringEquals": (_string_match(like=False), False),
    "StringNotEquals": (_string_match(like=False), True),
    "StringLike": (_string_match(like=True), False),
    "StringNotLike": (_string_match(like=True), True),
    "ArnLike": (_string_match(like=True), False),
    "Bool": (_bool, False),
    "NumericLessThan": (_numeric_less, False),
}


def _condition_holds(operator: str, key: str, policy_values: Any, request: Request) -> bool:
    ctx = request.context
    present = key in ctx
    if operator == "Null":
        return str(policy_values).lower() == ("false" if present else "true")
    qualifier, _, op = operator.rpartition(":")
    if op not in _OPERATORS:
        raise NotImplementedError(f"condition operator {operator}")
    matcher, negated = _OPERATORS[op]
    wanted = _as_list(policy_values)

    def matches_any(value: Any) -> bool:
        try:
            return any(matcher(p, value, ctx) for p in wanted)
        except _MissingVariable:
            return False

    if qualifier == "ForAllValues":
        values = _as_list(ctx.get(key, []))
        return all((not matches_any(v)) if negated else matches_any(v) for v in values)
    if qualifier == "ForAnyValue":
        values = _as_list(ctx.get(key, []))
        return any((not matches_any(v)) if negated else matches_any(v) for v in values)
    if qualifier:
        raise NotImplementedError(f"condition qualifier {qualifier}")
    if not present:
        return negated  # a negated operator holds when the key is absent
    value = ctx[key]
    if isinstance(value, list):
        raise NotImplementedError(f"{key} is multi-valued: use ForAllValues/ForAnyValue")
    return (not matches_any(value)) if negated else matches_any(value)


def _principal_matches(principal: Any, request: Request) -> bool:
    if principal == "*":
        return True
    arns = _as_list(principal.get("AWS", [])) if isinstance(principal, dict) else []
    for arn in arns:
        if arn == "*" or arn == request.principal:
            return True
        # an account root as principal delegates to every principal of that account
        if arn.endswith(":root") and request.principal.split(":")[4] == arn.split(":")[4]:
            return True
    services = _as_list(principal.get("Service", [])) if isinstance(principal, dict) else []
    return request.principal in services


def _names_action(actions: Any, action: str) -> bool:
    return any(_like(a, action, {}, ignore_case=True) for a in _as_list(actions))


def statement_applies(statement: Mapping[str, Any], request: Request) -> bool:
    """True when ``statement`` matches the request's action, resource, principal and conditions."""
    if "Action" in statement:
        if not _names_action(statement["Action"], request.action):
            return False
    elif _names_action(statement.get("NotAction", []), request.action):
        return False
    if "Resource" in statement:
        try:
            if not any(
                _like(r, request.resource, request.context) for r in _as_list(statement["Resource"])
            ):
                return False
        except _MissingVariable:
            return False
    if "Principal" in statement and not _principal_matches(statement["Principal"], request):
        return False
    conditions: Mapping[str, Mapping[str, Any]] = statement.get("Condition", {})
    return all(
        _condition_holds(operator, key, values, request)
        for operator, block in conditions.items()
        for key, values in block.items()
    )


def decide(request: Request, *policies: Mapping[str, Any]) -> str:
    """``"Allow"``, ``"Deny"`` (an explicit deny) or ``"ImplicitDeny"`` over the policies.

    Identity and resource policies of one account combine the same way: any matching
    Deny wins, else any matching Allow allows.
    """
    effects = {
        s["Effect"]
        for p in policies
        for s in _as_list(p["Statement"])
        if statement_applies(s, request)
    }
    if "Deny" in effects:
        return "Deny"
    return "Allow" if "Allow" in effects else "ImplicitDeny"


def policy_vars(**overrides: Any) -> dict[str, Any]:
    """Values for the permission templates, as modules/iam passes them (account 123456789012)."""
    values: dict[str, Any] = {
        "bucket_arn": "arn:aws:s3:::sf-data",
        "data_prefix": "shardflow",
        "table_arn": "arn:aws:dynamodb:eu-west-1:123456789012:table/sf-state",
        "queue_arn_prefix": "arn:aws:sqs:eu-west-1:123456789012:sf-job",
        "control_queue_arn": "arn:aws:sqs:eu-west-1:123456789012:sf-control",
        "worker_role_arn": "arn:aws:iam::123456789012:role/shardflow/sf-worker",
        "input_object_arns": ["arn:aws:s3:::sf-data/shardflow/inputs/*"],
        "input_bucket_arns": [],
        "kms_key_arns": [],
        "kms_via_services": [
            "s3.eu-west-1.amazonaws.com",
            "sqs.eu-west-1.amazonaws.com",
            "dynamodb.eu-west-1.amazonaws.com",
        ],
    }
    values.update(overrides)
    return values


def iter_statements(policy: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
    return list(_as_list(policy["Statement"]))
