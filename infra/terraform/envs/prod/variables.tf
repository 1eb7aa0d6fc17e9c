variable "region" {
  description = "AWS region of every resource."
  type        = string
}

variable "owner" {
  description = "Team or person responsible (the owner tag)."
  type        = string
}

variable "cost_center" {
  description = "Billing code (the cost-center tag)."
  type        = string
}

variable "bucket_name" {
  description = "Data bucket name; null derives one from the account id."
  type        = string
  default     = null
}

variable "input_bucket_arns" {
  description = "Other buckets that hold job inputs (read-only)."
  type        = list(string)
  default     = []
}

variable "cli_trusted_principal_arns" {
  description = "Principals (operators) that may assume the cli role; empty means this account."
  type        = list(string)
  default     = []
}

variable "coordinator_trusted_principal_arns" {
  description = "Principals that may assume the coordinator role; empty means this account."
  type        = list(string)
  default     = []
}

variable "worker_extra_trusted_principal_arns" {
  description = "Principals besides the coordinator that may mint job-scoped worker sessions."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Extra tags, merged over project, env, owner and cost-center."
  type        = map(string)
  default     = {}
}

variable "access_log_bucket" {
  description = "Existing bucket for S3 server access logs; null turns logging off."
  type        = string
  default     = null
}
