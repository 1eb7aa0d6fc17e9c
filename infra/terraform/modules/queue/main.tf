# The shared control queue and its dead-letter queue, for operator notifications
# (alerts, dashboard). Job queues are not created here: the coordinator creates one
# queue and one dead-letter queue per job at submit time ({queue_prefix}-{job_id} and
# {queue_prefix}-{job_id}-DLQ), and the iam module scopes every role to that prefix.

locals {
  use_kms = var.kms_key_arn != null
}

resource "aws_sqs_queue" "control_dlq" {
  name                              = "${var.name}-dlq"
  message_retention_seconds         = 1209600
  sqs_managed_sse_enabled           = local.use_kms ? null : true
  kms_master_key_id                 = var.kms_key_arn
  kms_data_key_reuse_period_seconds = local.use_kms ? 300 : null
  tags                              = var.tags
}

resource "aws_sqs_queue" "control" {
  name                              = var.name
  message_retention_seconds         = 345600
  visibility_timeout_seconds        = 60
  receive_wait_time_seconds         = 20
  sqs_managed_sse_enabled           = local.use_kms ? null : true
  kms_master_key_id                 = var.kms_key_arn
  kms_data_key_reuse_period_seconds = local.use_kms ? 300 : null
  tags                              = var.tags

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.control_dlq.arn
    maxReceiveCount     = var.max_receive_count
  })
}

resource "aws_sqs_queue_redrive_allow_policy" "control_dlq" {
  queue_url = aws_sqs_queue.control_dlq.id

  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.control.arn]
  })
}

module "control_policy" {
  source   = "../policy"
  template = "queue"
  vars     = { queue_arn = aws_sqs_queue.control.arn }
}

module "control_dlq_policy" {
  source   = "../policy"
  template = "queue"
  vars     = { queue_arn = aws_sqs_queue.control_dlq.arn }
}

resource "aws_sqs_queue_policy" "control" {
  queue_url = aws_sqs_queue.control.id
  policy    = module.control_policy.json
}

resource "aws_sqs_queue_policy" "control_dlq" {
  queue_url = aws_sqs_queue.control_dlq.id
  policy    = module.control_dlq_policy.json
}
