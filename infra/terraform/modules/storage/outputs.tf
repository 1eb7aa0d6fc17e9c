output "bucket_name" {
  description = "Name of the data bucket."
  value       = aws_s3_bucket.data.id
}

output "bucket_arn" {
  description = "ARN of the data bucket."
  value       = aws_s3_bucket.data.arn
}

output "sse_algorithm" {
  description = "Default server-side encryption of the bucket: aws:kms or AES256."
  value       = local.sse_algorithm
}
