# Offline smoke test of the whole prod stack: `terraform test` applies it against a
# mocked AWS provider (no credentials, no network), so the module wiring, the provider's
# own argument validation and the outputs a shardflow config needs are checked.
# Needs the AWS provider schema, so scripts/check-infra runs it only where the provider is
# available offline (terraform init -plugin-dir=...).

mock_provider "aws" {
  mock_data "aws_caller_identity" {
    defaults = {
      account_id = "123456789012"
    }
  }

  mock_data "aws_partition" {
    defaults = {
      partition  = "aws"
      dns_suffix = "amazonaws.com"
    }
  }

  mock_data "aws_region" {
    defaults = {
      id   = "eu-west-1"
      name = "eu-west-1"
    }
  }

  # Mocked attributes are random strings unless set: ARNs must look like ARNs.
  mock_resource "aws_kms_key" {
    defaults = {
      arn    = "arn:aws:kms:eu-west-1:123456789012:key/00000000-0000-0000-0000-000000000000"
      key_id = "00000000-0000-0000-0000-000000000000"
    }
  }

  mock_resource "aws_s3_bucket" {
    defaults = {
      id  = "shardflow-prod-data-123456789012"
      arn = "arn:aws:s3:::shardflow-prod-data-123456789012"
    }
  }

  mock_resource "aws_dynamodb_table" {
    defaults = {
      arn = "arn:aws:dynamodb:eu-west-1:123456789012:table/shardflow-prod-state"
    }
  }

  mock_resource "aws_sqs_queue" {
    defaults = {
      id  = "https://sqs.eu-west-1.amazonaws.com/123456789012/shardflow-prod-control"
      arn = "arn:aws:sqs:eu-west-1:123456789012:shardflow-prod-control"
    }
  }

  mock_resource "aws_iam_role" {
    defaults = {
      arn = "arn:aws:iam::123456789012:role/shardflow/shardflow-prod-role"
    }
  }

  mock_resource "aws_iam_policy" {
    defaults = {
      arn = "arn:aws:iam::123456789012:policy/shardflow/shardflow-prod-policy"
    }
  }
}

variables {
  region      = "eu-west-1"
  owner       = "data-platform"
  cost_center = "cc-1234"
}

run "apply_prod" {
  command = apply

  assert {
    condition     = output.storage_url == "s3://shardflow-prod-data-123456789012/shardflow"
    error_message = "storage_url: ${output.storage_url}"
  }

  assert {
    condition     = output.state_url == "dynamodb://shardflow-prod-state?region=eu-west-1"
    error_message = "state_url: ${output.state_url}"
  }

  assert {
    condition     = output.queue_url == "sqs://shardflow-prod-job"
    error_message = "queue_url: ${output.queue_url}"
  }

  assert {
    condition = output.backends_yaml == join("", [
      "backends:\n",
      "  storage: s3://shardflow-prod-data-123456789012/shardflow\n",
      "  state: dynamodb://shardflow-prod-state?region=eu-west-1\n",
      "  queue: sqs://shardflow-prod-job\n",
      "  region: eu-west-1\n",
      "  kms_key_id: arn:aws:kms:eu-west-1:123456789012:key/00000000-0000-0000-0000-000000000000\n",
    ])
    error_message = "backends_yaml: ${output.backends_yaml}"
  }

  assert {
    condition     = toset(keys(output.role_arns)) == toset(["coordinator", "worker", "cli", "dashboard"])
    error_message = "one role per component"
  }

  assert {
    condition     = output.kms_key_arn == "arn:aws:kms:eu-west-1:123456789012:key/00000000-0000-0000-0000-000000000000"
    error_message = "prod encrypts with its own KMS key"
  }
}
