variable "name" {
  description = "Name prefix of every resource, e.g. shardflow-prod."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{1,30}$", var.name))
    error_message = "Use 2-31 characters of a-z, 0-9 and '-'."
  }
}

variable "bucket_name" {
  description = "Data bucket name; null derives <name>-data-<account id>."
  type        = string
  default     = null
}

variable "data_prefix" {
  description = "Key prefix of shardflow's objects: the storage URL is s3://<bucket>/<data_prefix>."
  type        = string
  default     = "shardflow"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9._-]{0,62}$", var.data_prefix))
    error_message = "One path segment: 1-63 characters of a-z, 0-9, '.', '_' and '-'."
  }
}

variable "table_name" {
  description = "State table name; null derives <name>-state."
  type        = string
  default     = null
}

variable "queue_prefix" {
  description = "Prefix of the per-job queues the coordinator creates; null derives <name>-job."
  type        = string
  default     = null
}

variable "enable_kms" {
  description = "Create a customer managed KMS key and use it for the bucket, table and control queues."
  type        = bool
  default     = true
}

variable "deletion_protection" {
  description = "Protect the state table against deletion."
  type        = bool
  default     = true
}

variable "ttl_enabled" {
  description = "Expire state items through their expires_at attribute."
  type        = bool
  default     = true
}

variable "access_log_bucket" {
  description = "Existing bucket for S3 server access logs; null turns logging off."
  type        = string
  default     = null
}

variable "force_destroy" {
  description = "Allow terraform destroy to empty the data bucket (never in production)."
  type        = bool
  default     = false
}

variable "noncurrent_version_expiration_days" {
  description = "Days a replaced or deleted object version is kept."
  type        = number
  default     = 30
}

variable "temp_object_expiration_days" {
  description = "Days after which objects tagged shardflow-lifecycle=temp expire."
  type        = number
  default     = 14
}

variable "input_bucket_arns" {
  description = "Other buckets that hold job inputs (read-only)."
  type        = list(string)
  default     = []
}

variable "coordinator_trusted_principal_arns" {
  description = "Principals that may assume the coordinator role; empty means this account."
  type        = list(string)
  default     = []
}

variable "coordinator_trusted_services" {
  description = "Service principals that may assume the coordinator role."
  type        = list(string)
  default     = []
}

variable "worker_extra_trusted_principal_arns" {
  description = "Principals besides the coordinator that may mint job-scoped worker sessions."
  type        = list(string)
  default     = []
}

variable "cli_trusted_principal_arns" {
  description = "Principals that may assume the cli role; empty means this account."
  type        = list(string)
  default     = []
}

variable "dashboard_trusted_principal_arns" {
  description = "Principals that may assume the dashboard role; empty means this account."
  type        = list(string)
  default     = []
}

variable "dashboard_trusted_services" {
  description = "Service principals that may assume the dashboard role."
  type        = list(string)
  default     = []
}

variable "permissions_boundary_arn" {
  description = "Permissions boundary for every role; null for none."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags for every taggable resource (project, env, owner, cost-center, ...)."
  type        = map(string)
  default     = {}
}
