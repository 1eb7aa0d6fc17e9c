"""The Terraform modules keep the properties docs/security.md promises.

Every ``.tf`` file is parsed with python-hcl2 and the resources are checked for what a
reviewer would look for: encryption, the public access block, TLS-only policies,
versioning and lifecycle rules, point-in-time recovery, dead-letter queues, key rotation,
least-privilege IAM and tags. Policy documents are checked in their rendered form (the
same templates Terraform loads); when a ``terraform`` binary is present the templates are
also rendered by Terraform itself and compared with our rendering.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
import pytest
from hcl2 import SerializationOptions

from tests.infra import (
    JOB_TAG,
    POLICY_DIR,
    TERRAFORM_DIR,
    Request,
    decide,
    iter_statements,
    placeholders,
    policy_vars,
    render_policy,
    template_text,
)

MODULES = TERRAFORM_DIR / "modules"
ENVS = TERRAFORM_DIR / "envs"
TF_FILES = sorted(TERRAFORM_DIR.rglob("*.tf"))
TAGGABLE = {
    "aws_s3_bucket",
    "aws_dynamodb_table",
    "aws_sqs_queue",
    "aws_kms_key",
    "aws_iam_role",
    "aws_iam_policy",
}
UNTAGGABLE = {  # resource types AWS cannot tag; a new type must be added to one of the sets
    "aws_s3_bucket_ownership_controls",
    "aws_s3_bucket_public_access_block",
    "aws_s3_bucket_versioning",
    "aws_s3_bucket_server_side_encryption_configuration",
    "aws_s3_bucket_lifecycle_configuration",
    "aws_s3_bucket_logging",
    "aws_s3_bucket_policy",
    "aws_sqs_queue_redrive_allow_policy",
    "aws_sqs_queue_policy",
    "aws_kms_alias",
    "aws_kms_key_policy",
    "aws_iam_role_policy_attachment",
}
_OPTIONS = SerializationOptions(
    strip_string_quotes=True, explicit_blocks=False, with_comments=False
)


@cache
def _parse(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        return dict(hcl2.load(handle, serialization_options=_OPTIONS))


@cache
def _module(directory: Path) -> dict[str, dict[str, Any]]:
    """All blocks of one module: resources as "type.name", modules, variables, locals."""
    merged: dict[str, dict[str, Any]] = {
        "resource": {},
        "module": {},
        "variable": {},
        "locals": {},
        "output": {},
        "terraform": {},
    }
    for path in sorted(directory.glob("*.tf")):
        parsed = _parse(path)
        for block in parsed.get("resource", []):
            for rtype, named in block.items():
                for name, body in named.items():
                    merged["resource"][f"{rtype}.{name}"] = body
        for kind in ("module", "variable", "output"):
            for block in parsed.get(kind, []):
                merged[kind].update(block)
        for block in parsed.get("locals", []):
            merged["locals"].update(block)
        for block in parsed.get("terraform", []):
            merged["terraform"].update(block)
    return merged


def _resource(module: str, address: str) -> dict[str, Any]:
    body: dict[str, Any] = _module(MODULES / module)["resource"][address]
    return body


def _env_module(env: str) -> dict[str, Any]:
    body: dict[str, Any] = _module(ENVS / env)["module"]["shardflow"]
    return body


@pytest.mark.parametrize("path", TF_FILES, ids=lambda p: str(p.relative_to(TERRAFORM_DIR)))
def test_every_tf_file_parses(path: Path) -> None:
    assert _parse(path)


# --- S3 ------------------------------------------------------------------------------------


def test_bucket_blocks_public_access_and_acls() -> None:
    block = _resource("storage", "aws_s3_bucket_public_access_block.data")
    for setting in (
        "block_public_acls",
        "block_public_policy",
        "ignore_public_acls",
        "restrict_public_buckets",
    ):
        assert block[setting] is True, setting
    ownership = _resource("storage", "aws_s3_bucket_ownership_controls.data")
    assert ownership["rule"][0]["object_ownership"] == "BucketOwnerEnforced"


def test_bucket_is_encrypted_with_kms_when_given_a_key() -> None:
    rule = _resource("storage", "aws_s3_bucket_server_side_encryption_configuration.data")["rule"]
    default = rule[0]["apply_server_side_encryption_by_default"][0]
    assert default["sse_algorithm"] == "${local.sse_algorithm}"
    assert default["kms_master_key_id"] == "${var.kms_key_arn}"
    assert _module(MODULES / "storage")["locals"]["sse_algorithm"] == (
        '${local.use_kms ? "aws:kms" : "AES256"}'
    )


def test_bucket_is_versioned_with_lifecycle_rules() -> None:
    versioning = _resource("storage", "aws_s3_bucket_versioning.data")
    assert versioning["versioning_configuration"][0]["status"] == "Enabled"
    rules = {
        r["id"]: r
        for r in _resource("storage", "aws_s3_bucket_lifecycle_configuration.data")["rule"]
    }
    assert all(r["status"] == "Enabled" for r in rules.values())
    abort = rules["abort-incomplete-multipart-uploads"]
    assert abort["filter"] == [{}]  # the whole bucket
    assert abort["abort_incomplete_multipart_upload"][0]["days_after_initiation"] == (
        "${var.abort_incomplete_multipart_days}"
    )
    variables = _module(MODULES / "storage")["variable"]
    assert variables["abort_incomplete_multipart_days"]["default"] == 2
    noncurrent = rules["expire-noncurrent-versions"]["noncurrent_version_expiration"][0]
    assert noncurrent["noncurrent_days"] == "${var.noncurrent_version_expiration_days}"
    assert variables["noncurrent_version_expiration_days"]["default"] == 30
    temp = rules["expire-temp-objects"]
    assert temp["filter"][0]["tag"] == [{"key": "shardflow-lifecycle", "value": "temp"}]


def _bucket_policy(kms: bool) -> dict[str, Any]:
    call = _module(MODULES / "storage")["module"]["bucket_policy"]
    assert call["template"] == "bucket"
    assert _resource("storage", "aws_s3_bucket_policy.data")["policy"] == (
        "${module.bucket_policy.json}"
    )
    return render_policy(
        "bucket",
        {
            "bucket_arn": "arn:aws:s3:::b",
            "sse_algorithm": "aws:kms" if kms else "AES256",
            "kms_key_arn": "arn:aws:kms:eu-west-1:1:key/k" if kms else "",
            "kms_object_arns": ["arn:aws:s3:::b/*"] if kms else [],
        },
    )


def test_bucket_policy_is_tls_only_and_refuses_other_encryption() -> None:
    for kms in (False, True):
        statements = {s["Sid"]: s for s in iter_statements(_bucket_policy(kms))}
        tls = statements["DenyInsecureTransport"]
        assert tls["Effect"] == "Deny"
        assert tls["Principal"] == "*"
        assert tls["Action"] == "s3:*"
        assert set(tls["Resource"]) == {"arn:aws:s3:::b", "arn:aws:s3:::b/*"}
        assert tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        other = statements["DenyOtherEncryption"]["Condition"]["StringNotEquals"]
        assert other == {"s3:x-amz-server-side-encryption": "aws:kms" if kms else "AES256"}
        assert "DenyCustomerProvidedKeys" in statements
        assert ("DenyOtherKmsKeys" in statements) is kms


# --- DynamoDB ------------------------------------------------------------------------------


def test_state_table_design() -> None:
    table = _resource("state", "aws_dynamodb_table.state")
    assert table["billing_mode"] == "PAY_PER_REQUEST"
    assert (table["hash_key"], table["range_key"]) == ("PK", "SK")
    keys = ("PK", "SK", "GSI1PK", "GSI1SK", "GSI2PK", "GSI2SK")
    assert {a["name"]: a["type"] for a in table["attribute"]} == dict.fromkeys(keys, "S")
    indexes = {i["name"]: i for i in table["global_secondary_index"]}
    for name in ("GSI1", "GSI2"):
        assert indexes[name]["hash_key"] == f"{name}PK"
        assert indexes[name]["range_key"] == f"{name}SK"
        assert indexes[name]["projection_type"] == "ALL"
    assert table["point_in_time_recovery"] == [{"enabled": True}]
    assert table["server_side_encryption"][0]["enabled"] is True
    assert table["server_side_encryption"][0]["kms_key_arn"] == "${var.kms_key_arn}"
    assert table["deletion_protection_enabled"] == "${var.deletion_protection}"
    ttl = table["dynamic"][0]["ttl"]
    assert ttl["content"][0]["attribute_name"] == "${ttl.value}"
    assert "expires_at" in ttl["for_each"]


def test_production_protects_the_table_and_uses_kms() -> None:
    prod = _env_module("prod")
    assert prod["deletion_protection"] is True
    assert prod["enable_kms"] is True
    assert prod["force_destroy"] is False
    stack = _module(MODULES / "stack")
    assert stack["variable"]["deletion_protection"]["default"] is True
    assert stack["variable"]["enable_kms"]["default"] is True
    for module in ("storage", "state", "queue"):
        assert stack["module"][module]["kms_key_arn"] == "${local.kms_key_arn}"
    assert stack["module"]["state"]["deletion_protection"] == "${var.deletion_protection}"


# --- SQS and KMS ---------------------------------------------------------------------------


def test_control_queues_are_encrypted_with_a_dead_letter_queue() -> None:
    for name in ("control", "control_dlq"):
        queue = _resource("queue", f"aws_sqs_queue.{name}")
        assert queue["sqs_managed_sse_enabled"] == "${local.use_kms ? null : true}"
        assert queue["kms_master_key_id"] == "${var.kms_key_arn}"
        policy = _resource("queue", f"aws_sqs_queue_policy.{name}")
        assert policy["policy"].startswith("${module.")
    redrive = _resource("queue", "aws_sqs_queue.control")["redrive_policy"]
    assert "deadLetterTargetArn = aws_sqs_queue.control_dlq.arn" in redrive
    assert "maxReceiveCount = var.max_receive_count" in redrive
    allow = _resource("queue", "aws_sqs_queue_redrive_allow_policy.control_dlq")
    assert "aws_sqs_queue.control.arn" in allow["redrive_allow_policy"]
    statement = render_policy("queue", {"queue_arn": "arn:q"})["Statement"][0]
    assert statement["Effect"] == "Deny"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_kms_key_rotates_and_names_the_roles() -> None:
    key = _resource("kms", "aws_kms_key.this")
    assert key["enable_key_rotation"] is True
    assert _module(MODULES / "kms")["variable"]["deletion_window_days"]["default"] >= 7
    policy = render_policy(
        "kms-key",
        {
            "partition": "aws",
            "account_id": "1",
            "user_role_arns": ["arn:aws:iam::1:role/w"],
            "kms_via_services": ["s3.eu-west-1.amazonaws.com"],
        },
    )
    use = next(
        s for s in iter_statements(policy) if s["Sid"] == "ShardflowRolesUseKeyThroughServices"
    )
    assert use["Principal"] == {"AWS": ["arn:aws:iam::1:role/w"]}
    assert "kms:ViaService" in use["Condition"]["StringEquals"]


# --- IAM -----------------------------------------------------------------------------------

ROLES = ("coordinator", "worker", "cli", "dashboard")


def _actions(statement: Mapping[str, Any]) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]


def _resources(statement: Mapping[str, Any]) -> list[str]:
    resource = statement["Resource"]
    return resource if isinstance(resource, list) else [resource]


@pytest.mark.parametrize("role", ROLES)
def test_permission_policies_name_actions_and_resources(role: str) -> None:
    policy = render_policy(role, policy_vars(kms_key_arns=["arn:aws:kms:eu-west-1:1:key/k"]))
    for statement in iter_statements(policy):
        assert "NotAction" not in statement
        assert "NotResource" not in statement
        for action in _actions(statement):
            assert "*" not in action, f"{role}/{statement['Sid']}: wildcard action {action}"
        for resource in _resources(statement):
            assert resource != "*", f"{role}/{statement['Sid']}: Resource *"
            assert resource.startswith("arn:aws:"), resource


def test_worker_policy_is_bound_to_its_job_and_never_deletes() -> None:
    policy = render_policy("worker", policy_vars())
    tag = "${" + JOB_TAG + "}"
    for statement in iter_statements(policy):
        actions = _actions(statement)
        if statement["Effect"] == "Deny":
            assert {"s3:DeleteObject", "s3:DeleteObjectVersion"} <= set(actions)
            continue
        assert not any(a.startswith("s3:Delete") for a in actions)
        assert not any(a in {"dynamodb:DeleteItem", "dynamodb:BatchWriteItem"} for a in actions)
        if statement["Sid"] in {"ReadInputs", "DescribeStateTable"}:
            continue
        bound = any(tag in r for r in _resources(statement)) or tag in json.dumps(
            statement.get("Condition", {})
        )
        assert bound, f"{statement['Sid']} is not bound to the job tag"
    writes = next(s for s in iter_statements(policy) if s["Sid"] == "WriteOwnJobResultsAndLogs")
    assert all(r.endswith(("/results/*", "/logs/*")) for r in _resources(writes))


def test_audit_log_is_create_only_and_out_of_the_workers_reach() -> None:
    """docs/security.md: coordinator, cli and dashboard append to ``audit/`` (put, and get
    to chain); no role may delete or tag an entry; the worker is denied writing it."""
    entry = "arn:aws:s3:::sf-data/shardflow/audit/000000000000.json"
    for role in ROLES:
        policy = render_policy(role, policy_vars())
        statements = {s["Sid"]: s for s in iter_statements(policy)}
        writes = role != "worker"
        if writes:
            append = statements["AppendAuditLog"]
            assert append["Effect"] == "Allow"
            assert sorted(_actions(append)) == ["s3:GetObject", "s3:PutObject"]
            assert _resources(append) == ["arn:aws:s3:::sf-data/shardflow/audit/*"]
        else:
            deny = statements["NeverWriteAuditLog"]
            assert deny["Effect"] == "Deny"
            assert {"s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion"} <= set(
                _actions(deny)
            )
        context = {JOB_TAG: "job-a"}
        assert (decide(Request("s3:PutObject", entry, context=context), policy) == "Allow") is (
            writes
        )
        for action in ("s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObjectTagging"):
            assert decide(Request(action, entry, context=context), policy) != "Allow", (
                role,
                action,
            )


def test_iam_module_feeds_every_template_placeholder() -> None:
    iam = _module(MODULES / "iam")
    fed = set(iam["locals"]["permission_vars"])
    for role in ROLES:
        assert placeholders(template_text(role)) <= fed, role
    for name, trust in iam["locals"]["trust_vars"].items():
        assert placeholders(template_text("role-trust")) <= set(trust), name
    assert placeholders(template_text("worker-trust")) <= set(iam["module"]["worker_trust"]["vars"])
    storage_vars = set(_module(MODULES / "storage")["module"]["bucket_policy"]["vars"])
    assert placeholders(template_text("bucket")) <= storage_vars
    assert placeholders(template_text("kms-key")) <= set(
        _module(MODULES / "kms")["module"]["key_policy"]["vars"]
    )


def test_every_template_is_used_and_exists() -> None:
    used: set[str] = set()
    for directory in sorted(p for p in MODULES.iterdir() if p.is_dir()):
        for call in _module(directory)["module"].values():
            if call.get("source") == "../policy" and not call["template"].startswith("${"):
                used.add(call["template"])
    # modules/iam renders the four permission templates through one for_each call
    permissions = _module(MODULES / "iam")["module"]["permissions"]
    assert permissions["template"] == "${each.key}"
    assert permissions["for_each"] == '${toset(["coordinator", "worker", "cli", "dashboard"])}'
    used |= set(ROLES)
    assert used == {p.stem for p in POLICY_DIR.glob("*.json")}


# --- tags, environments, outputs -----------------------------------------------------------


def test_every_taggable_resource_is_tagged() -> None:
    for directory in sorted(p for p in MODULES.iterdir() if p.is_dir()):
        for address, body in _module(directory)["resource"].items():
            rtype = address.split(".")[0]
            assert rtype in TAGGABLE | UNTAGGABLE, f"classify {rtype} as taggable or not"
            if rtype in TAGGABLE:
                assert body.get("tags") == "${var.tags}", f"{directory.name}: {address}"


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_environment_tags_backend_and_outputs(env: str) -> None:
    module = _module(ENVS / env)
    tags = module["locals"]["tags"]
    for key in ("project", "env", "owner", '"cost-center"'):
        assert f"{key} = " in tags, key
    assert f'env = "{env}"' in tags
    provider = _parse(ENVS / env / "main.tf")["provider"][0]["aws"]
    assert provider["default_tags"][0]["tags"] == "${local.tags}"
    assert _env_module(env)["tags"] == "${local.tags}"
    backend = module["terraform"]["backend"][0]["s3"]
    assert backend["use_lockfile"] is True
    assert backend["encrypt"] is True
    assert "bucket" not in backend  # partial configuration: backend.hcl
    assert (ENVS / env / "backend.hcl.example").is_file()
    outputs = set(module["output"])
    assert {"storage_url", "state_url", "queue_url", "role_arns", "kms_key_arn"} <= outputs
    assert "backends_yaml" in outputs


def test_stack_outputs_drop_into_a_shardflow_config() -> None:
    stack = _module(MODULES / "stack")
    urls = stack["locals"]
    assert urls["storage_url"] == "s3://${module.storage.bucket_name}/${var.data_prefix}"
    assert urls["state_url"] == "dynamodb://${module.state.table_name}?region=${local.region}"
    assert urls["queue_url"] == "sqs://${local.queue_prefix}"
    yaml = stack["output"]["backends_yaml"]["value"]
    for line in (
        "backends:",
        "  storage: ${local.storage_url}",
        "  state: ${local.state_url}",
        "  queue: ${local.queue_url}",
        "  region: ${local.region}",
        "  kms_key_id: ${local.kms_key_arn}",  # the bucket policy refuses SSE-S3 with KMS on
    ):
        assert line in yaml, line


# --- Terraform renders the templates as the tests do ---------------------------------------


def _render_cases() -> dict[str, tuple[str, dict[str, Any]]]:
    kms = "arn:aws:kms:eu-west-1:1:key/k"
    cases: dict[str, tuple[str, dict[str, Any]]] = {
        role: (role, policy_vars(input_bucket_arns=["arn:aws:s3:::raw"])) for role in ROLES
    }
    cases["worker_kms"] = ("worker", policy_vars(kms_key_arns=[kms]))
    cases["bucket_aes"] = (
        "bucket",
        {"bucket_arn": "arn:aws:s3:::b", "sse_algorithm": "AES256", "kms_key_arn": ""}
        | {"kms_object_arns": []},
    )
    cases["worker_trust"] = ("worker-trust", {"principal_arns": ["arn:aws:iam::1:role/c"]})
    cases["role_trust"] = (
        "role-trust",
        {"principal_arns": ["arn:aws:iam::1:root"], "service_principals": []},
    )
    return cases


@pytest.mark.skipif(shutil.which("terraform") is None, reason="no terraform binary")
def test_terraform_renders_the_templates_like_the_tests(tmp_path: Path) -> None:
    # a developer's own init leaves providers (hundreds of MB) and state: not copied
    skip = shutil.ignore_patterns(".terraform", "*.tfstate*", ".terraform.lock.hcl")
    shutil.copytree(TERRAFORM_DIR.parent, tmp_path / "infra", ignore=skip)
    root = tmp_path / "infra" / "terraform" / "render-check"
    root.mkdir()
    cases = _render_cases()
    blocks = [
        f'module "{name}" {{\n  source   = "../modules/policy"\n  template = "{template}"\n'
        f"  vars     = jsondecode({json.dumps(json.dumps(values))})\n}}\n"
        f'output "{name}" {{\n  value = module.{name}.json\n}}\n'
        for name, (template, values) in cases.items()
    ]
    (root / "main.tf").write_text("\n".join(blocks), encoding="utf-8")
    env = {**os.environ, "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1"}
    env["TF_CLI_CONFIG_FILE"] = os.devnull

    def terraform(*args: str) -> str:
        done = subprocess.run(
            ["terraform", *args], cwd=root, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    terraform("init", "-backend=false", "-input=false", "-no-color")
    terraform("apply", "-auto-approve", "-input=false", "-no-color", "-state=render.tfstate")
    outputs = json.loads(terraform("output", "-json", "-state=render.tfstate"))
    for name, (template, values) in cases.items():
        assert json.loads(outputs[name]["value"]) == render_policy(template, values), name
