"""Alerts: rules over the stores, suppression between passes, and delivery channels.

What it is for: telling an operator when a job needs them (stalled, failing, near its
failure budget, starved by a rate limit, hit by infrastructure errors, or the machine
running out of disk or memory) without a server: ``shardflow watch`` runs one pass or a
loop, and can run as a step of the Slurm reconcile chain.

Key modules: :mod:`.config` (``alerts.yaml``), :mod:`.rules` (pure rule functions),
:mod:`.state` (what is remembered between passes), :mod:`.runner` (one pass: observe,
evaluate, deliver), :mod:`.channels` (email, Slack, PagerDuty, webhook, log),
:mod:`.text` (the words of an alert).

What not to do here: read the clock or a store inside a rule (pass facts in), log a
channel's URL or key, or retry a delivery in a loop (the next pass retries it).
"""
