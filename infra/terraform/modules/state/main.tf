# One table, single-table design (see docs/infra.md):
#   job        PK=JOB#{job_id}              SK=JOB
#   task       PK=JOB#{job_id}              SK=TASK#{task_id}
#   counter    PK=JOB#{job_id}              SK=CNT#{shard:03d}
#   event      PK=JOB#{job_id}              SK=EVT#{time}#{seq}
#   bucket     PK=BUCKET#{job_id}/{name}    SK=BUCKET
# GSI1 (GSI1PK, GSI1SK) lists a job's tasks by status; GSI2 (GSI2PK, GSI2SK) lists jobs.
# Every key of a job starts with its job id, which is what the worker's
# dynamodb:LeadingKeys condition relies on.

resource "aws_dynamodb_table" "state" {
  name                        = var.table_name
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "PK"
  range_key                   = "SK"
  deletion_protection_enabled = var.deletion_protection

  attribute {
    name = "PK"
    type = "S"
  }

  attribute {
    name = "SK"
    type = "S"
  }

  attribute {
    name = "GSI1PK"
    type = "S"
  }

  attribute {
    name = "GSI1SK"
    type = "S"
  }

  attribute {
    name = "GSI2PK"
    type = "S"
  }

  attribute {
    name = "GSI2SK"
    type = "S"
  }

  global_secondary_index {
    name            = "GSI1"
    hash_key        = "GSI1PK"
    range_key       = "GSI1SK"
    projection_type = "ALL"
  }

  global_secondary_index {
    name            = "GSI2"
    hash_key        = "GSI2PK"
    range_key       = "GSI2SK"
    projection_type = "ALL"
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = var.kms_key_arn
  }

  dynamic "ttl" {
    for_each = var.ttl_enabled ? ["expires_at"] : []

    content {
      attribute_name = ttl.value
      enabled        = true
    }
  }

  tags = var.tags
}
