variable "table_name" {
  description = "Name of the single state table."
  type        = string
}

variable "kms_key_arn" {
  description = "Customer managed KMS key for the table; null uses the AWS managed key (aws/dynamodb)."
  type        = string
  default     = null
}

variable "deletion_protection" {
  description = "Refuse DeleteTable while true (set in production)."
  type        = bool
  default     = true
}

variable "ttl_enabled" {
  description = "Let DynamoDB delete items whose expires_at (epoch seconds) has passed."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags for every taggable resource."
  type        = map(string)
  default     = {}
}
