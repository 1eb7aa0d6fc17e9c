variable "name" {
  description = "Name of the control queue; its dead-letter queue is <name>-dlq."
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key for SSE-KMS; null uses SQS managed encryption (SSE-SQS)."
  type        = string
  default     = null
}

variable "max_receive_count" {
  description = "Deliveries of one message before it moves to the dead-letter queue."
  type        = number
  default     = 5
}

variable "tags" {
  description = "Tags for every taggable resource."
  type        = map(string)
  default     = {}
}
