variable "bucket_name" {
  description = "Name of the data bucket (globally unique)."
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key for SSE-KMS; null keeps SSE-S3 (AES256)."
  type        = string
  default     = null
}

variable "access_log_bucket" {
  description = "Existing bucket that receives S3 server access logs; null turns logging off."
  type        = string
  default     = null
}

variable "abort_incomplete_multipart_days" {
  description = "Days after which an unfinished multipart upload is aborted and its parts deleted."
  type        = number
  default     = 2
}

variable "noncurrent_version_expiration_days" {
  description = "Days a replaced or deleted object version is kept before it expires."
  type        = number
  default     = 30
}

variable "temp_object_expiration_days" {
  description = "Days after which objects tagged shardflow-lifecycle=temp expire."
  type        = number
  default     = 14
}

variable "force_destroy" {
  description = "Allow terraform destroy to delete a bucket that still holds objects."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags for every taggable resource."
  type        = map(string)
  default     = {}
}
