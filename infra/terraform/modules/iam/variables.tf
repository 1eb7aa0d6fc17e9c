variable "name_prefix" {
  description = "Prefix of the role and policy names, e.g. shardflow-prod."
  type        = string
}

variable "bucket_arn" {
  description = "ARN of the data bucket."
  type        = string
}

variable "data_prefix" {
  description = "Key prefix of shardflow's objects in the bucket (storage URL s3://bucket/<data_prefix>)."
  type        = string
}

variable "table_arn" {
  description = "ARN of the state table."
  type        = string
}

variable "queue_arn_prefix" {
  description = "ARN of the job queues without the -{job_id} suffix: arn:aws:sqs:REGION:ACCOUNT:{queue_prefix}."
  type        = string
}

variable "control_queue_arn" {
  description = "ARN of the shared control queue."
  type        = string
}

variable "input_bucket_arns" {
  description = "Buckets that hold job inputs, read-only for the coordinator and the workers."
  type        = list(string)
  default     = []
}

variable "kms_key_arn" {
  description = "KMS key of the bucket, table and queues; null when KMS is off."
  type        = string
  default     = null
}

variable "coordinator_trusted_principal_arns" {
  description = "Principals that may assume the coordinator role."
  type        = list(string)
  default     = []
}

variable "coordinator_trusted_services" {
  description = "Service principals that may assume the coordinator role, e.g. ec2.amazonaws.com."
  type        = list(string)
  default     = []
}

variable "worker_extra_trusted_principal_arns" {
  description = "Principals besides the coordinator role that may mint job-scoped worker sessions."
  type        = list(string)
  default     = []
}

variable "cli_trusted_principal_arns" {
  description = "Principals (operators) that may assume the cli role."
  type        = list(string)
  default     = []
}

variable "dashboard_trusted_principal_arns" {
  description = "Principals that may assume the dashboard role."
  type        = list(string)
  default     = []
}

variable "dashboard_trusted_services" {
  description = "Service principals that may assume the dashboard role, e.g. ecs-tasks.amazonaws.com."
  type        = list(string)
  default     = []
}

variable "worker_max_session_seconds" {
  description = "Longest worker session (role chaining caps it at one hour)."
  type        = number
  default     = 43200
}

variable "permissions_boundary_arn" {
  description = "Permissions boundary for every role; null for none."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags for every taggable resource."
  type        = map(string)
  default     = {}
}
