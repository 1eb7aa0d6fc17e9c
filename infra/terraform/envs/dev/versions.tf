terraform {
  required_version = ">= 1.10.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.70, < 7.0"
    }
  }

  # Partial configuration: bucket and region come from backend.hcl
  # (terraform init -backend-config=backend.hcl; see backend.hcl.example).
  # use_lockfile locks the state with an S3 conditional write (Terraform >= 1.10),
  # so no DynamoDB lock table is needed.
  backend "s3" {
    key          = "shardflow/dev/terraform.tfstate"
    encrypt      = true
    use_lockfile = true
  }
}
