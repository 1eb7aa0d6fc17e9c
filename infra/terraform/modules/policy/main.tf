# Renders one policy document from infra/policies/<template>.json.
#
# The JSON templates are the single source of truth for every policy: this module loads
# them with templatefile() and tests/infra renders the same files in Python, so what the
# tests exercise is what Terraform applies. Template syntax is limited to what both sides
# implement: "${name}" (a string), "${jsonencode(name)}" (a list) and "$${...}" (a literal
# IAM policy variable such as $${aws:PrincipalTag/shardflow-job}).

variable "template" {
  description = "Template name: infra/policies/<template>.json."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9-]+$", var.template))
    error_message = "The template name is a file stem of lower-case letters, digits and '-'."
  }
}

variable "vars" {
  description = "Values for the template's placeholders (strings and lists of strings)."
  type        = any
}

locals {
  document = jsondecode(templatefile("${path.module}/../../../policies/${var.template}.json", var.vars))

  # An optional input left empty (no extra input buckets, KMS off) renders a statement
  # whose Resource or Principal list is empty, which IAM rejects: such a statement is
  # dropped. tests/infra applies the same rule.
  statements = [
    for s in local.document.Statement : s
    if length(flatten([try(s.Resource, "-")])) > 0 && length(flatten([try(values(s.Principal), "-")])) > 0
  ]
}

output "json" {
  description = "The rendered policy document."
  value       = jsonencode(merge(local.document, { Statement = local.statements }))
}
