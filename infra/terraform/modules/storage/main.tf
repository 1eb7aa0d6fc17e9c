# The data bucket: every job's objects live under {data_prefix}/jobs/{job_id}/ (see
# src/shardflow/layout.py). Private, encrypted, TLS-only, versioned.

locals {
  use_kms       = var.kms_key_arn != null
  sse_algorithm = local.use_kms ? "aws:kms" : "AES256"
}

resource "aws_s3_bucket" "data" {
  bucket        = var.bucket_name
  force_destroy = var.force_destroy
  tags          = var.tags
}

resource "aws_s3_bucket_ownership_controls" "data" {
  bucket = aws_s3_bucket.data.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "data" {
  bucket                  = aws_s3_bucket.data.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "data" {
  bucket = aws_s3_bucket.data.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "data" {
  bucket = aws_s3_bucket.data.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = local.sse_algorithm
      kms_master_key_id = var.kms_key_arn
    }
    # A bucket key cuts KMS requests (and their cost) by orders of magnitude at
    # thousands of result objects per job.
    bucket_key_enabled = local.use_kms
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "data" {
  bucket = aws_s3_bucket.data.id

  # Lifecycle rules on noncurrent versions need versioning in place first.
  depends_on = [aws_s3_bucket_versioning.data]

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_incomplete_multipart_days
    }
  }

  rule {
    id     = "expire-noncurrent-versions"
    status = "Enabled"

    filter {}

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_expiration_days
    }

    expiration {
      expired_object_delete_marker = true
    }
  }

  # S3 prefixes cannot hold wildcards (jobs/*/aggregate/), so temporary objects are
  # found by tag: the writer tags them shardflow-lifecycle=temp at put time.
  rule {
    id     = "expire-temp-objects"
    status = "Enabled"

    filter {
      tag {
        key   = "shardflow-lifecycle"
        value = "temp"
      }
    }

    expiration {
      days = var.temp_object_expiration_days
    }
  }
}

resource "aws_s3_bucket_logging" "data" {
  count = var.access_log_bucket == null ? 0 : 1

  bucket        = aws_s3_bucket.data.id
  target_bucket = var.access_log_bucket
  target_prefix = "s3-access/${var.bucket_name}/"
}

module "bucket_policy" {
  source   = "../policy"
  template = "bucket"
  vars = {
    bucket_arn      = aws_s3_bucket.data.arn
    sse_algorithm   = local.sse_algorithm
    kms_key_arn     = local.use_kms ? var.kms_key_arn : ""
    kms_object_arns = local.use_kms ? ["${aws_s3_bucket.data.arn}/*"] : []
  }
}

resource "aws_s3_bucket_policy" "data" {
  bucket = aws_s3_bucket.data.id
  policy = module.bucket_policy.json

  # A policy put before the public access block could briefly be evaluated without it.
  depends_on = [aws_s3_bucket_public_access_block.data]
}
