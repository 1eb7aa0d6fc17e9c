locals {
  storage_url = "s3://${module.storage.bucket_name}/${var.data_prefix}"
  state_url   = "dynamodb://${module.state.table_name}?region=${local.region}"
  queue_url   = "sqs://${local.queue_prefix}"
}

output "storage_url" {
  description = "backends.storage of a shardflow config."
  value       = local.storage_url
}

output "state_url" {
  description = "backends.state of a shardflow config."
  value       = local.state_url
}

output "queue_url" {
  description = "backends.queue of a shardflow config (the per-job queue prefix)."
  value       = local.queue_url
}

output "bucket_name" {
  description = "Name of the data bucket."
  value       = module.storage.bucket_name
}

output "table_name" {
  description = "Name of the state table."
  value       = module.state.table_name
}

output "queue_prefix" {
  description = "Prefix of the per-job queues."
  value       = local.queue_prefix
}

output "control_queue_url" {
  description = "URL of the operator notification queue."
  value       = module.queue.control_queue_url
}

output "kms_key_arn" {
  description = "ARN of the KMS key, null when KMS is off (SSE-S3, AWS managed keys)."
  value       = local.kms_key_arn
}

output "role_arns" {
  description = "ARNs of the coordinator, worker, cli and dashboard roles."
  value       = module.iam.role_arns
}

output "cli_policy_arn" {
  description = "ARN of the cli policy."
  value       = module.iam.cli_policy_arn
}

output "backends_yaml" {
  description = "A backends: block to paste into a shardflow job file."
  # With KMS on, kms_key_id is required, not optional: the S3 adapter asks for SSE-S3
  # without it, and the bucket policy refuses puts that ask for other encryption.
  value = join("\n", concat(
    [
      "backends:",
      "  storage: ${local.storage_url}",
      "  state: ${local.state_url}",
      "  queue: ${local.queue_url}",
      "  region: ${local.region}",
    ],
    local.kms_key_arn == null ? [] : ["  kms_key_id: ${local.kms_key_arn}"],
    [""],
  ))
}
