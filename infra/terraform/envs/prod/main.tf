# Production: a customer managed KMS key with rotation, a table protected against
# deletion, and a bucket terraform destroy refuses to empty.

provider "aws" {
  region = var.region

  default_tags {
    tags = local.tags
  }
}

locals {
  tags = merge(var.tags, {
    project       = "shardflow"
    env           = "prod"
    owner         = var.owner
    "cost-center" = var.cost_center
  })
}

module "shardflow" {
  source = "../../modules/stack"

  name                                = "shardflow-prod"
  bucket_name                         = var.bucket_name
  enable_kms                          = true
  deletion_protection                 = true
  force_destroy                       = false
  access_log_bucket                   = var.access_log_bucket
  input_bucket_arns                   = var.input_bucket_arns
  cli_trusted_principal_arns          = var.cli_trusted_principal_arns
  coordinator_trusted_principal_arns  = var.coordinator_trusted_principal_arns
  worker_extra_trusted_principal_arns = var.worker_extra_trusted_principal_arns
  tags                                = local.tags
}
