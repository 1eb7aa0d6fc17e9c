# Optional customer managed key for the bucket, the table and the control queues.
# Its policy lives in aws_kms_key_policy rather than on the key: the policy names the
# roles, the roles' policies name the key, and a separate policy resource breaks that
# cycle (KMS refuses a policy naming principals that do not exist yet).

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

data "aws_region" "current" {}

locals {
  via_services = [
    for service in ["s3", "sqs", "dynamodb"] :
    "${service}.${data.aws_region.current.id}.${data.aws_partition.current.dns_suffix}"
  ]
}

resource "aws_kms_key" "this" {
  description             = "shardflow data key (${var.alias})"
  enable_key_rotation     = true
  rotation_period_in_days = 365
  deletion_window_in_days = var.deletion_window_days
  tags                    = var.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.alias}"
  target_key_id = aws_kms_key.this.key_id
}

module "key_policy" {
  source   = "../policy"
  template = "kms-key"
  vars = {
    partition        = data.aws_partition.current.partition
    account_id       = data.aws_caller_identity.current.account_id
    user_role_arns   = var.user_role_arns
    kms_via_services = local.via_services
  }
}

resource "aws_kms_key_policy" "this" {
  key_id = aws_kms_key.this.key_id
  policy = module.key_policy.json
}
