# Everything one shardflow deployment needs, composed from the other modules.
# envs/dev and envs/prod call this module with their own settings.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

data "aws_region" "current" {}

locals {
  account_id   = data.aws_caller_identity.current.account_id
  region       = data.aws_region.current.id
  bucket_name  = coalesce(var.bucket_name, "${var.name}-data-${local.account_id}")
  table_name   = coalesce(var.table_name, "${var.name}-state")
  queue_prefix = coalesce(var.queue_prefix, "${var.name}-job")
  kms_key_arn  = var.enable_kms ? module.kms[0].key_arn : null
}

module "kms" {
  count  = var.enable_kms ? 1 : 0
  source = "../kms"

  alias = var.name
  user_role_arns = [
    module.iam.coordinator_role_arn,
    module.iam.worker_role_arn,
    module.iam.cli_role_arn,
    module.iam.dashboard_role_arn,
  ]
  tags = var.tags
}

module "storage" {
  source = "../storage"

  bucket_name                        = local.bucket_name
  kms_key_arn                        = local.kms_key_arn
  access_log_bucket                  = var.access_log_bucket
  noncurrent_version_expiration_days = var.noncurrent_version_expiration_days
  temp_object_expiration_days        = var.temp_object_expiration_days
  force_destroy                      = var.force_destroy
  tags                               = var.tags
}

module "state" {
  source = "../state"

  table_name          = local.table_name
  kms_key_arn         = local.kms_key_arn
  deletion_protection = var.deletion_protection
  ttl_enabled         = var.ttl_enabled
  tags                = var.tags
}

module "queue" {
  source = "../queue"

  # Outside the job-queue prefix on purpose: no job id can name it, and the job
  # permissions ({queue_prefix}-*) do not reach it.
  name        = "${var.name}-control"
  kms_key_arn = local.kms_key_arn
  tags        = var.tags
}

module "iam" {
  source = "../iam"

  name_prefix                         = var.name
  bucket_arn                          = module.storage.bucket_arn
  data_prefix                         = var.data_prefix
  table_arn                           = module.state.table_arn
  queue_arn_prefix                    = "arn:${data.aws_partition.current.partition}:sqs:${local.region}:${local.account_id}:${local.queue_prefix}"
  control_queue_arn                   = module.queue.control_queue_arn
  input_bucket_arns                   = var.input_bucket_arns
  kms_key_arn                         = local.kms_key_arn
  coordinator_trusted_principal_arns  = var.coordinator_trusted_principal_arns
  coordinator_trusted_services        = var.coordinator_trusted_services
  worker_extra_trusted_principal_arns = var.worker_extra_trusted_principal_arns
  cli_trusted_principal_arns          = var.cli_trusted_principal_arns
  dashboard_trusted_principal_arns    = var.dashboard_trusted_principal_arns
  dashboard_trusted_services          = var.dashboard_trusted_services
  permissions_boundary_arn            = var.permissions_boundary_arn
  tags                                = var.tags
}
