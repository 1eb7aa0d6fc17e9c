output "coordinator_role_arn" {
  description = "ARN of the coordinator role."
  value       = aws_iam_role.coordinator.arn
}

output "worker_role_arn" {
  description = "ARN of the worker role (assume it with the session tag shardflow-job={job_id})."
  value       = aws_iam_role.worker.arn
}

output "cli_role_arn" {
  description = "ARN of the cli (operator) role."
  value       = aws_iam_role.cli.arn
}

output "dashboard_role_arn" {
  description = "ARN of the dashboard role."
  value       = aws_iam_role.dashboard.arn
}

output "cli_policy_arn" {
  description = "ARN of the cli policy, to attach to an SSO permission set or group instead of assuming the role."
  value       = aws_iam_policy.cli.arn
}

output "role_arns" {
  description = "Every role ARN, by role."
  value = {
    coordinator = aws_iam_role.coordinator.arn
    worker      = aws_iam_role.worker.arn
    cli         = aws_iam_role.cli.arn
    dashboard   = aws_iam_role.dashboard.arn
  }
}
