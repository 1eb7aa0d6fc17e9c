"""The dashboard's FastAPI app: server-rendered pages, four actions, ``/metrics``.

Security model: every page and ``/metrics`` needs a token (the read-only one is
enough); actions need the operator token, arrive only as POST, and carry the session's
CSRF token (or a bearer header). Cross-site POSTs are refused by their Origin /
Sec-Fetch-Site headers as well. Pages set a strict Content-Security-Policy (no inline
script or style, nothing from another origin), and Jinja2 escapes every value, so job
names, error messages and log lines render as text. The app binds nowhere itself: the
``shardflow dashboard`` command serves it on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from shardflow.dashboard.actions import JobAction, ServicesFactory, open_job_services, perform
from shardflow.dashboard.auth import Identity, Sessions, TokenSet
from shardflow.dashboard.scan import ScanCache
from shardflow.dashboard.stores import StoreOpener
from shardflow.dashboard.tasks import (
    TASK_SORTS,
    TaskFilter,
    parse_log,
    read_log_tail,
    task_detail,
    task_page,
)
from shardflow.dashboard.views import JOB_SORTS, ItemFailureCache, job_page, jobs_rows
from shardflow.dashboard.web import (
    host_allowed,
    number,
    page_size,
    qs,
    query_suffix,
    read_form,
    safe_next,
    same_origin,
    template_env,
)
from shardflow.errors import InvalidIdError, ShardflowError, UsageError
from shardflow.layout import validate_id
from shardflow.models import Job, JobStatus, TaskStatus
from shardflow.observability.metrics import CONTENT_TYPE, render_prometheus
from shardflow.statestore.base import StateStore

if TYPE_CHECKING:
    from shardflow.objectstore.base import ObjectStore

log = logging.getLogger("shardflow.dashboard")

HERE = Path(__file__).parent
SESSION_COOKIE = "sf_session"
FLASH_COOKIE = "sf_flash"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class _NeedLogin(Exception):
    pass


class _NotFound(Exception):
    pass


def create_app(
    state: StateStore,
    tokens: TokenSet,
    *,
    clock: Callable[[], float] = time.time,
    services: ServicesFactory = open_job_services,
    open_store: Callable[[Job], ObjectStore | None] | None = None,
    sessions: Sessions | None = None,
    scan_wait: float = 0.25,
    allowed_hosts: Collection[str] | None = None,
) -> FastAPI:
    """The dashboard over ``state``. ``services`` builds the ports retry and cancel need
    (default: from the job's config snapshot); ``open_store`` gives a job's object store
    or None (default: from its snapshot, cached). With ``allowed_hosts`` (what
    ``shardflow dashboard`` passes) a request whose Host header is neither an IP address,
    ``localhost`` nor one of these names is refused: a DNS-rebinding page reaches the
    server under its own name. The caller owns ``state``."""
    sessions = sessions or Sessions()
    scans = ScanCache(state, clock=clock, wait=scan_wait)
    opener: Callable[[Job], ObjectStore | None] = open_store or StoreOpener()
    failures = ItemFailureCache(opener)
    env = template_env()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        scans.close()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def identify(request: Request) -> Identity | None:
        header = request.headers.get("authorization", "")
        if header[:7].lower() == "bearer ":
            return tokens.lookup(header[7:].strip())
        return sessions.verify(request.cookies.get(SESSION_COOKIE), clock())

    def viewer(request: Request) -> Identity:
        who = identify(request)
        if who is None:
            raise _NeedLogin()
        return who

    def render(request: Request, name: str, code: int = 200, **ctx: Any) -> HTMLResponse:
        who = identify(request)
        flash = request.cookies.get(FLASH_COOKIE, "")
        kind, _, text = flash.partition(":")
        kind = kind if kind in ("ok", "error") else "ok"
        body = env.get_template(name).render(
            who=who,
            csrf=sessions.csrf_token(who) if who else "",
            flash={"kind": kind, "text": urllib.parse.unquote(text)} if text else None,
            now=clock(),
            **ctx,
        )
        response = HTMLResponse(body, status_code=code)
        if flash:
            response.delete_cookie(FLASH_COOKIE, path="/")
        return response

    def get_job(job_id: str) -> Job:
        try:
            validate_id(job_id, "job id")
        except InvalidIdError:
            raise _NotFound() from None
        job = state.get_job(job_id)
        if job is None:
            raise _NotFound()
        return job

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        if allowed_hosts is not None and not host_allowed(
            request.headers.get("host", ""), allowed_hosts
        ):
            return PlainTextResponse("unexpected Host header\n", status_code=400)
        response: Response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        # "no-referrer" would make browsers send "Origin: null" on our own form posts
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(_NeedLogin)
    async def need_login(request: Request, _exc: _NeedLogin) -> Response:
        if request.url.path == "/metrics" or request.method != "GET":
            return PlainTextResponse(
                "a dashboard token is required\n",
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        target = qs("/login", next=request.url.path + query_suffix(request))
        return RedirectResponse(target, status_code=303)

    @app.exception_handler(_NotFound)
    async def not_found(request: Request, _exc: _NotFound) -> Response:
        return render(request, "error.html", 404, title="Not found", message="No such page.")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request, next: str | None = None) -> Response:
        return render(request, "login.html", next=safe_next(next), error=None)

    @app.post("/login")
    async def login(request: Request) -> Response:
        if not same_origin(request):
            return PlainTextResponse("cross-site request refused\n", status_code=403)
        form = await read_form(request)
        who = tokens.lookup(form.get("token", ""))
        target = safe_next(form.get("next"))
        if who is None:
            log.warning("dashboard: a sign-in with an unknown token was refused")
            return render(request, "login.html", 401, next=target, error="Unknown token.")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            sessions.issue(who, clock()),
            httponly=True,
            samesite="strict",
            path="/",
        )
        return response

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        who = viewer(request)
        form = await read_form(request)
        if not same_origin(request) or not sessions.check_csrf(who, form.get("csrf")):
            return PlainTextResponse("missing or wrong CSRF token\n", status_code=403)
        sessions.revoke(who, clock())
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.get("/", response_class=HTMLResponse)
    def jobs_list(
        request: Request,
        status: str | None = None,
        q: str | None = None,
        sort: str = "created",
        limit: str | None = None,
    ) -> Response:
        viewer(request)
        status = status if status in {s.value for s in JobStatus} else None
        sort = sort if sort in JOB_SORTS else "created"
        count = page_size(limit)
        rows = jobs_rows(state, now=clock(), status=status, q=q, sort=sort, limit=count)
        return render(
            request,
            "jobs.html",
            rows=rows,
            status=status or "",
            q=q or "",
            sort=sort,
            limit=count,
            statuses=[s.value for s in JobStatus],
            sorts=JOB_SORTS,
        )

    @app.get("/jobs/{job_id}", response_class=HTMLResponse)
    def job_detail(request: Request, job_id: str) -> Response:
        viewer(request)
        job = get_job(job_id)
        page = job_page(
            state, job, now=clock(), scan=scans.get(job), item_failures=failures.get(job)
        )
        return render(request, "job.html", **page)

    @app.get("/jobs/{job_id}/tasks", response_class=HTMLResponse)
    def job_tasks(
        request: Request,
        job_id: str,
        status: str | None = None,
        error_class: str | None = None,
        min_seconds: str | None = None,
        sort: str = "id",
        after: str | None = None,
        limit: str | None = None,
    ) -> Response:
        viewer(request)
        job = get_job(job_id)
        flt = TaskFilter(
            status=TaskStatus(status) if status in {s.value for s in TaskStatus} else None,
            error_class=error_class or None,
            min_seconds=number(min_seconds),
            sort=sort if sort in TASK_SORTS else "id",
        )
        count = page_size(limit)
        try:
            page = task_page(state, job.job_id, flt, now=clock(), after=after or None, limit=count)
        except InvalidIdError:
            raise _NotFound() from None
        return render(
            request,
            "tasks.html",
            job=job,
            page=page,
            flt=flt,
            after=after or "",
            limit=count,
            statuses=[s.value for s in TaskStatus],
            sorts=TASK_SORTS,
            classes=["transient", "permanent", "infrastructure", "unknown"],
        )

    @app.get("/jobs/{job_id}/tasks/{task_id}", response_class=HTMLResponse)
    def task_view(
        request: Request, job_id: str, task_id: str, attempt: str | None = None
    ) -> Response:
        viewer(request)
        job = get_job(job_id)
        try:
            task = state.get_task(job.job_id, validate_id(task_id, "task id"))
        except InvalidIdError:
            task = None
        if task is None:
            raise _NotFound()
        detail = task_detail(job, task, now=clock(), open_store=opener)
        with_log = [a["number"] for a in detail["attempts"] if a["log"]]
        wanted = number(attempt)
        if wanted is not None and int(wanted) in with_log:
            shown: int | None = int(wanted)
        else:
            shown = with_log[-1] if with_log else None
        lines, cut = None, False
        if shown is not None:
            tail = read_log_tail(job, task.task_id, shown, opener)
            if tail is not None:
                lines, cut = parse_log(*tail), tail[1]
        return render(request, "task.html", job=job, shown=shown, lines=lines, cut=cut, **detail)

    @app.get("/jobs/{job_id}/tasks/{task_id}/log/{attempt}")
    def task_log_raw(request: Request, job_id: str, task_id: str, attempt: int) -> Response:
        viewer(request)
        job = get_job(job_id)
        try:
            tail = read_log_tail(job, validate_id(task_id, "task id"), attempt, opener)
        except InvalidIdError:
            tail = None
        if tail is None:
            raise _NotFound()
        # text/plain + nosniff: a log line holding HTML is shown as text, never run
        return Response(tail[0], media_type="text/plain; charset=utf-8")

    @app.post("/jobs/{job_id}/actions/{action}")
    async def act(request: Request, job_id: str, action: str) -> Response:
        who = viewer(request)
        form = await read_form(request)
        if not same_origin(request) or not sessions.check_csrf(who, form.get("csrf")):
            return PlainTextResponse("missing or wrong CSRF token\n", status_code=403)
        if not who.can_operate:
            return PlainTextResponse("this token may only view\n", status_code=403)
        try:
            chosen = JobAction(action)
            validate_id(job_id, "job id")
        except (ValueError, InvalidIdError):
            return PlainTextResponse("no such action\n", status_code=404)
        try:
            outcome = await run_in_threadpool(
                perform, state, job_id, chosen, actor=who.actor, now=clock, services=services
            )
            kind, message = "ok", outcome.message
        except UsageError as exc:
            kind, message = "error", str(exc)
        except ShardflowError as exc:
            log.exception("dashboard action %s on %s failed", chosen.value, job_id)
            kind, message = "error", f"{chosen.value} failed: {exc}"
        if who.nonce is None:  # a script: answer in words, no redirect
            return PlainTextResponse(message + "\n", status_code=200 if kind == "ok" else 409)
        response = RedirectResponse(f"/jobs/{job_id}", status_code=303)
        response.set_cookie(
            FLASH_COOKIE,
            f"{kind}:{urllib.parse.quote(message[:800])}",
            max_age=60,
            httponly=True,
            samesite="strict",
            path="/",
        )
        return response

    @app.get("/metrics")
    def metrics(request: Request) -> Response:
        viewer(request)
        return Response(render_prometheus(state), media_type=CONTENT_TYPE)

    return app
