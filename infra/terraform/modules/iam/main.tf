# Four roles with least-privilege policies rendered from infra/policies/*.json:
#   coordinator  submit, reconcile, aggregate: the data prefix, the table, the job queues
#   worker       one job only, bound by the session tag shardflow-job
#   cli          operators: read everything, control and purge jobs
#   dashboard    read everything, control jobs, never delete
# The audit log ({data_prefix}/audit/) is create-only: coordinator, cli and dashboard
# append to it (s3:PutObject, and s3:GetObject to chain after the previous entry), no
# role may delete or tag an entry, and the worker policy denies writing it.
# The worker role serves every job: the coordinator assumes it with the session tag
# shardflow-job={job_id}, and the worker policy resolves ${aws:PrincipalTag/shardflow-job}
# in its resource ARNs and dynamodb:LeadingKeys condition.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

data "aws_region" "current" {}

locals {
  account_root = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"

  # Inputs may live in the data bucket under {data_prefix}/inputs/ or in other buckets.
  input_object_arns = concat(
    ["${var.bucket_arn}/${var.data_prefix}/inputs/*"],
    [for arn in var.input_bucket_arns : "${arn}/*"],
  )

  kms_key_arns = var.kms_key_arn == null ? [] : [var.kms_key_arn]

  kms_via_services = [
    for service in ["s3", "sqs", "dynamodb"] :
    "${service}.${data.aws_region.current.id}.${data.aws_partition.current.dns_suffix}"
  ]

  # Placeholders of coordinator.json, worker.json, cli.json and dashboard.json.
  permission_vars = {
    bucket_arn        = var.bucket_arn
    data_prefix       = var.data_prefix
    table_arn         = var.table_arn
    queue_arn_prefix  = var.queue_arn_prefix
    control_queue_arn = var.control_queue_arn
    worker_role_arn   = aws_iam_role.worker.arn
    input_object_arns = local.input_object_arns
    input_bucket_arns = var.input_bucket_arns
    kms_key_arns      = local.kms_key_arns
    kms_via_services  = local.kms_via_services
  }

  # An empty principal list defaults to the account: any principal of this account
  # whose own policy allows sts:AssumeRole on the role.
  trust_vars = {
    coordinator = {
      principal_arns     = length(var.coordinator_trusted_principal_arns) + length(var.coordinator_trusted_services) > 0 ? var.coordinator_trusted_principal_arns : [local.account_root]
      service_principals = var.coordinator_trusted_services
    }
    cli = {
      principal_arns     = length(var.cli_trusted_principal_arns) > 0 ? var.cli_trusted_principal_arns : [local.account_root]
      service_principals = []
    }
    dashboard = {
      principal_arns     = length(var.dashboard_trusted_principal_arns) + length(var.dashboard_trusted_services) > 0 ? var.dashboard_trusted_principal_arns : [local.account_root]
      service_principals = var.dashboard_trusted_services
    }
  }
}

module "trust" {
  for_each = local.trust_vars

  source   = "../policy"
  template = "role-trust"
  vars     = each.value
}

module "worker_trust" {
  source   = "../policy"
  template = "worker-trust"
  vars = {
    principal_arns = concat([aws_iam_role.coordinator.arn], var.worker_extra_trusted_principal_arns)
  }
}

module "permissions" {
  for_each = toset(["coordinator", "worker", "cli", "dashboard"])

  source   = "../policy"
  template = each.key
  vars     = local.permission_vars
}

resource "aws_iam_role" "coordinator" {
  name                 = "${var.name_prefix}-coordinator"
  path                 = "/shardflow/"
  description          = "shardflow coordinator: submit, reconcile, aggregate"
  assume_role_policy   = module.trust["coordinator"].json
  permissions_boundary = var.permissions_boundary_arn
  tags                 = var.tags
}

resource "aws_iam_role" "worker" {
  name                 = "${var.name_prefix}-worker"
  path                 = "/shardflow/"
  description          = "shardflow worker: one job, bound by the session tag shardflow-job"
  assume_role_policy   = module.worker_trust.json
  max_session_duration = var.worker_max_session_seconds
  permissions_boundary = var.permissions_boundary_arn
  tags                 = var.tags
}

resource "aws_iam_role" "cli" {
  name                 = "${var.name_prefix}-cli"
  path                 = "/shardflow/"
  description          = "shardflow operators: status, pause, resume, cancel, retry, purge"
  assume_role_policy   = module.trust["cli"].json
  permissions_boundary = var.permissions_boundary_arn
  tags                 = var.tags
}

resource "aws_iam_role" "dashboard" {
  name                 = "${var.name_prefix}-dashboard"
  path                 = "/shardflow/"
  description          = "shardflow dashboard: read everything, control jobs, never delete"
  assume_role_policy   = module.trust["dashboard"].json
  permissions_boundary = var.permissions_boundary_arn
  tags                 = var.tags
}

resource "aws_iam_policy" "coordinator" {
  name        = "${var.name_prefix}-coordinator"
  path        = "/shardflow/"
  description = "shardflow coordinator permissions"
  policy      = module.permissions["coordinator"].json
  tags        = var.tags
}

resource "aws_iam_policy" "worker" {
  name        = "${var.name_prefix}-worker"
  path        = "/shardflow/"
  description = "shardflow worker permissions, scoped to the job in the session tag"
  policy      = module.permissions["worker"].json
  tags        = var.tags
}

resource "aws_iam_policy" "cli" {
  name        = "${var.name_prefix}-cli"
  path        = "/shardflow/"
  description = "shardflow operator permissions"
  policy      = module.permissions["cli"].json
  tags        = var.tags
}

resource "aws_iam_policy" "dashboard" {
  name        = "${var.name_prefix}-dashboard"
  path        = "/shardflow/"
  description = "shardflow dashboard permissions"
  policy      = module.permissions["dashboard"].json
  tags        = var.tags
}

resource "aws_iam_role_policy_attachment" "coordinator" {
  role       = aws_iam_role.coordinator.name
  policy_arn = aws_iam_policy.coordinator.arn
}

resource "aws_iam_role_policy_attachment" "worker" {
  role       = aws_iam_role.worker.name
  policy_arn = aws_iam_policy.worker.arn
}

resource "aws_iam_role_policy_attachment" "cli" {
  role       = aws_iam_role.cli.name
  policy_arn = aws_iam_policy.cli.arn
}

resource "aws_iam_role_policy_attachment" "dashboard" {
  role       = aws_iam_role.dashboard.name
  policy_arn = aws_iam_policy.dashboard.arn
}
