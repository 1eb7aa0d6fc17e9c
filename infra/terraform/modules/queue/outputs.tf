output "control_queue_arn" {
  description = "ARN of the control queue."
  value       = aws_sqs_queue.control.arn
}

output "control_queue_url" {
  description = "URL of the control queue."
  value       = aws_sqs_queue.control.id
}

output "control_dlq_arn" {
  description = "ARN of the control queue's dead-letter queue."
  value       = aws_sqs_queue.control_dlq.arn
}
