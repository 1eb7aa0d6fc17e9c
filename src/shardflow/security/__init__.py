"""The security baseline in the code: redaction and the audit log.

- :mod:`.redact`: :class:`~shardflow.security.redact.Redactor` masks credentials,
  tokens and configured secret fields in text; :class:`RedactingFilter` applies it to
  every log record; :func:`redact_config` makes display copies of a job config;
  :func:`check_no_embedded_credentials` refuses configs that carry credentials.
- :mod:`.audit`: the append-only, hash-chained audit log of submissions, control
  commands and configuration changes, and :func:`~shardflow.security.audit.verify`.

Not here: id and path validation (:mod:`shardflow.layout`), safe YAML
(:mod:`shardflow.configyaml`), dashboard tokens (:mod:`shardflow.dashboard.auth`).
Do not import heavy modules here: logging setup imports this package in every process.
"""
