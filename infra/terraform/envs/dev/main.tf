# Development: AWS managed encryption keys (no KMS key to pay for), a table that
# terraform destroy may delete, and a bucket it may empty.

provider "aws" {
  region = var.region

  default_tags {
    tags = local.tags
  }
}

locals {
  tags = merge(var.tags, {
    project       = "shardflow"
    env           = "dev"
    owner         = var.owner
    "cost-center" = var.cost_center
  })
}

module "shardflow" {
  source = "../../modules/stack"

  name                                = "shardflow-dev"
  bucket_name                         = var.bucket_name
  enable_kms                          = false
  deletion_protection                 = false
  force_destroy                       = true
  noncurrent_version_expiration_days  = 7
  input_bucket_arns                   = var.input_bucket_arns
  cli_trusted_principal_arns          = var.cli_trusted_principal_arns
  coordinator_trusted_principal_arns  = var.coordinator_trusted_principal_arns
  worker_extra_trusted_principal_arns = var.worker_extra_trusted_principal_arns
  tags                                = local.tags
}
