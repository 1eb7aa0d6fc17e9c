variable "alias" {
  description = "Alias name without the alias/ prefix."
  type        = string
}

variable "user_role_arns" {
  description = "Roles that may use the key through S3, SQS and DynamoDB."
  type        = list(string)
  default     = []
}

variable "deletion_window_days" {
  description = "Waiting period before a scheduled key deletion takes effect."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags for every taggable resource."
  type        = map(string)
  default     = {}
}
