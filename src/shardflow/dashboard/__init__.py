"""The web dashboard: server-rendered pages over the state and object stores.

What it is for: a read view of jobs (progress, throughput, errors, slowest tasks, rate
limits, slots, task drill-down with logs) and four operator actions. It is an optional
process that only reads the stores; the jobs never depend on it.

Key modules: :mod:`.app` (the FastAPI factory and routes), :mod:`.auth` (tokens,
sessions, CSRF), :mod:`.actions` (pause/resume/retry/cancel over the ports),
:mod:`.views` and :mod:`.tasks` (what a page shows, as plain data), :mod:`.scan` (the
cached task scan behind charts and slowest tasks), :mod:`.charts` (SVG geometry).

What not to do here: import FastAPI or Jinja2 from anywhere outside this package (they
are an optional extra), build keys or paths by hand (use :mod:`shardflow.layout`), or
mark any user-controlled text safe in a template (autoescape stays on everywhere).
"""
