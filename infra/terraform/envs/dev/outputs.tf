output "storage_url" {
  description = "backends.storage of a shardflow config."
  value       = module.shardflow.storage_url
}

output "state_url" {
  description = "backends.state of a shardflow config."
  value       = module.shardflow.state_url
}

output "queue_url" {
  description = "backends.queue of a shardflow config."
  value       = module.shardflow.queue_url
}

output "kms_key_arn" {
  description = "ARN of the KMS key (null when KMS is off)."
  value       = module.shardflow.kms_key_arn
}

output "role_arns" {
  description = "ARNs of the coordinator, worker, cli and dashboard roles."
  value       = module.shardflow.role_arns
}

output "control_queue_url" {
  description = "URL of the operator notification queue."
  value       = module.shardflow.control_queue_url
}

output "backends_yaml" {
  description = "A backends: block to paste into a shardflow job file."
  value       = module.shardflow.backends_yaml
}
