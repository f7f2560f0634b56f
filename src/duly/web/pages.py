"""The dashboard's pages and actions, one handler each, every one through the services.

Pages (``GET``) read; actions (``POST``, admin and operator, CSRF-checked by
:func:`~duly.web.gate.action_form`) change through the same service calls as the API and
answer ``303`` back to a page. A refusal (no such object, a state that forbids it, bad
input) is a 4xx page and changes nothing.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from duly.audit import AuditFilter
from duly.banking.catalog import describe
from duly.banking.customers import CustomerRow, Customers
from duly.engine.states import FINAL, RunStatus
from duly.engine.store.base import NewSchedule, RunRow
from duly.operations.balance_check import monitoring
from duly.operations.balance_check.models import JOB_NAME as BALANCE_CHECK_JOB
from duly.operations.balance_check.nights import last_nights
from duly.operations.recurring.models import RECURRING_JOB
from duly.operations.recurring.service import RecurringPayments
from duly.operations.transfers.models import TRANSFER_JOB
from duly.operations.transfers.service import ScheduledTransfers
from duly.timing import SpecError
from duly.web.charts import Series, bar_chart
from duly.web.gate import WebError, action_form, read_form, viewer_of
from duly.web.session import COOKIE, PRESESSION_COOKIE, Signed

__all__ = ["routes", "spec_of"]

P = ParamSpec("P")
T = TypeVar("T")

#: Statuses in the order charts stack them and tables list them.
STATUS_ORDER = [s.value for s in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.RUNNING,
                                  RunStatus.RETRYING, RunStatus.QUEUED, RunStatus.CANCELLED,
                                  RunStatus.SKIPPED, RunStatus.MISSED)]  # fmt: skip
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")
_MAX_ID = 2**63 - 1
#: What an action's redirect may say (fixed texts, so a link cannot put words on a page).
NOTICES = {
    "acked": "Alert acknowledged.",
    "alert-resolved": "Alert resolved.",
    "error-resolved": "Error resolved.",
    "paused": "Paused.",
    "resumed": "Resumed.",
    "created": "Schedule created.",
    "cancelled": "Cancelled.",
    "retried": "Queued again.",
    "triggered": "Run queued.",
}


# -- plumbing ---------------------------------------------------------------------------


def _dash(request: Request) -> Any:
    return request.app.state.dashboard


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", ""))


def render(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    """``template`` with the viewer, its CSRF token, the mount point and the notice."""
    dash = _dash(request)
    viewer = request.scope.get("state", {}).get("viewer")
    notice = NOTICES.get(request.query_params.get("notice", ""))
    html = dash.templates.get_template(template).render(
        viewer=viewer, root=_root(request), notice=notice, now=dash.clock.now(), page=template,
        csrf=dash.sessions.csrf_token(viewer) if isinstance(viewer, Signed) else "",
        **values,
    )  # fmt: skip
    return HTMLResponse(html, status_code=status)


def _back(request: Request, path: str, notice: str) -> RedirectResponse:
    return RedirectResponse(f"{_root(request)}{path}?notice={notice}", status_code=303)


def _action(request: Request, allowed: tuple[str, ...]) -> str:
    action = str(request.path_params["action"])
    if action not in allowed:
        raise WebError(404, "No such action.")
    return action


def _id(request: Request, name: str = "id") -> int:
    text = str(request.path_params[name])
    if not text.isdigit() or not 1 <= int(text) <= _MAX_ID:
        raise WebError(404, "No such object.")
    return int(text)


async def _call(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` on a worker thread (services block on the database)."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


# -- sign-in ----------------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    # Only a path inside the dashboard: never another site (an open redirect).
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _cookie_kwargs(request: Request) -> dict[str, Any]:
    return {"httponly": True, "samesite": "strict", "secure": request.url.scheme == "https",
            "path": _root(request) or "/"}  # fmt: skip


def signin_page(request: Request, message: str = "", status: int = 200) -> Response:
    """The sign-in form, with a fresh CSRF nonce cookie."""
    dash = _dash(request)
    cookie, csrf = dash.sessions.new_presession()
    html = dash.templates.get_template("signin.html").render(
        root=_root(request), csrf=csrf, message=message, viewer=None, notice=None,
        next=_safe_next(request.query_params.get("next")),
    )  # fmt: skip
    response = HTMLResponse(html, status_code=status)
    response.set_cookie(PRESESSION_COOKIE, cookie, max_age=3600, **_cookie_kwargs(request))
    return response


async def signin(request: Request) -> Response:
    """Exchange an API token for a session cookie."""
    dash = _dash(request)
    form = await read_form(request)
    if not dash.sessions.presession_ok(request.cookies.get(PRESESSION_COOKIE), form.get("csrf")):
        return signin_page(request, "The form expired; please sign in again.", 403)
    signed, why = await _call(dash.sessions.sign_in, form.get("token", ""), dash.clock.now())
    if signed is None:
        return signin_page(request, why, 401)
    target = _safe_next(form.get("next"))
    response = RedirectResponse(f"{_root(request)}{target}", status_code=303)
    lifetime = int(dash.sessions.lifetime.total_seconds())
    response.set_cookie(COOKIE, dash.sessions.cookie_value(signed), max_age=lifetime,
                        **_cookie_kwargs(request))  # fmt: skip
    response.delete_cookie(PRESESSION_COOKIE, path=_root(request) or "/")
    return response


async def signout(request: Request) -> Response:
    """Forget the session cookie (CSRF-checked, so no other site can sign you out)."""
    viewer = viewer_of(request)
    form = await read_form(request)
    if not _dash(request).sessions.csrf_ok(viewer, form.get("csrf")):
        raise WebError(403, "The form's security token is missing or stale; reload the page.")
    response = RedirectResponse(f"{_root(request)}/signin", status_code=303)
    response.delete_cookie(COOKIE, path=_root(request) or "/")
    return response


# -- operations -------------------------------------------------------------------------


def _status_series(rows: list[dict[str, int]]) -> list[Series]:
    present = [s for s in STATUS_ORDER if any(r.get(s) for r in rows)]
    return [Series(s, s, [r.get(s, 0) for r in rows]) for s in present]


def operations(request: Request) -> Response:
    """Runs now and per hour, lateness, queues, nodes, next fires, open alerts."""
    dash = _dash(request)
    ov = dash.client.overview()
    alerts = dash.client.alerts("open", 50) + dash.client.alerts("acked", 50)
    labels = [h.hour.strftime("%H:00") for h in ov.by_hour]
    chart = bar_chart("Runs scheduled per hour (UTC) in the last 24 hours, by status now",
                      labels, _status_series([h.counts for h in ov.by_hour]), every=3)  # fmt: skip
    return render(request, "operations.html", ov=ov, alerts=alerts, chart=chart,
                  statuses=STATUS_ORDER)  # fmt: skip


async def alert_action(request: Request) -> Response:
    """Acknowledge or resolve an alert."""
    action = _action(request, ("ack", "resolve"))
    viewer, _ = await action_form(request)
    status = "acked" if action == "ack" else "resolved"
    await _call(_dash(request).client.set_alert_status, _id(request), status,
                viewer.principal.recorded_as)  # fmt: skip
    return _back(request, "/", "acked" if status == "acked" else "alert-resolved")


# -- errors -----------------------------------------------------------------------------


def _window(request: Request) -> tuple[str, timedelta]:
    return ("7d", timedelta(days=7)) if request.query_params.get("window") == "7d" else (
        "24h", timedelta(hours=24))  # fmt: skip


def errors(request: Request) -> Response:
    """Errors by code, per hour, top customers, and the recent ones."""
    dash = _dash(request)
    engine, now = dash.store.engine, dash.clock.now()
    name, span = _window(request)
    since = now - span
    codes = monitoring.error_counts_by_code(engine, since, now)
    hours = monitoring.error_counts_by_hour(engine, since, now)
    top = monitoring.top_customers(engine, since, now, limit=10)
    show = request.query_params.get("show", "open")
    recent = monitoring.recent_errors(engine, limit=50,
                                      resolved=None if show == "all" else False)  # fmt: skip
    step = 24 if name == "7d" else 3
    fmt = "%a %H:00" if name == "7d" else "%H:00"
    chart = bar_chart(f"Errors per hour (UTC), last {name}", [h.hour.strftime(fmt) for h in hours],
                      [Series("errors", "failed", [h.count for h in hours])], every=step)  # fmt: skip
    return render(request, "errors.html", window=name, codes=codes, chart=chart, top=top,
                  recent=recent, show=show, total=sum(c.count for c in codes))  # fmt: skip


def error_detail(request: Request) -> Response:
    """One error: customer, run and attempts, the bank's code, the suggested action."""
    dash = _dash(request)
    row = monitoring.get_error(dash.store.engine, _id(request))
    if row is None:
        raise WebError(404, "No such error.")
    customer = (
        Customers(dash.store.engine, dash.clock).get(row.customer_id) if row.customer_id else None
    )
    run = dash.store.run_get(row.run_id) if row.run_id else None
    attempts = dash.client.attempts(run.id) if run else []
    return render(request, "error.html", error=row, info=describe(row.error_code),
                  customer=customer, run=run, attempts=attempts)  # fmt: skip


async def error_resolve(request: Request) -> Response:
    """Resolve an error with a note (once)."""
    viewer, form = await action_form(request)
    dash = _dash(request)
    error_id = _id(request)
    await _call(monitoring.resolve, dash.store.engine, error_id, by=viewer.principal.recorded_as,
                notes=form.get("notes", ""), now=dash.clock.now())  # fmt: skip
    return _back(request, f"/errors/{error_id}", "error-resolved")


# -- schedules --------------------------------------------------------------------------


def spec_of(kind: str, at: str, days: list[str]) -> str:
    """The spec of a daily, weekdays or weekly schedule at ``at`` (``HH:MM``).

    :raises WebError: 422 for an unknown kind, a time that is not ``HH:MM`` or a weekly
        schedule without a valid day.
    """
    if not _TIME.match(at):
        raise WebError(422, "Time: give it as HH:MM (24-hour).")
    if kind in ("daily", "weekdays"):
        return f"{kind}:{at}"
    if kind == "weekly":
        chosen = [d for d in WEEKDAYS if d in days]
        if not chosen or len(chosen) != len(set(days)):
            raise WebError(422, "Weekly: choose at least one day (mon … sun).")
        return f"weekly:{','.join(chosen)}@{at}"
    raise WebError(422, "Repeat: choose daily, weekdays or weekly.")


def _form_spec(values: dict[str, Any]) -> tuple[str, str]:
    days = values.get("days") or []
    tz = str(values.get("timezone") or "UTC").strip()
    if not tz or len(tz) > 64:
        raise WebError(422, "Time zone: give an IANA name such as Europe/London.")
    return spec_of(str(values.get("kind", "")), str(values.get("time", "")), list(days)), tz


def _schedule_rows(dash: Any) -> list[dict[str, Any]]:
    rows = dash.store.schedule_list()
    last = dash.store.schedule_last_runs([r.id for r in rows])
    out = []
    for row in rows:
        try:
            fires = dash.client.schedule_preview(row, count=3)
        except SpecError:
            fires = []
        out.append({"row": row, "fires": fires, "last": last.get(row.id)})
    return out


def _preview(dash: Any, values: dict[str, Any]) -> tuple[list[datetime], str]:
    try:
        spec, tz = _form_spec(values)
        return dash.client.preview(spec, tz, count=5), spec
    except (WebError, SpecError) as exc:
        return [], str(exc)


def _query_form(request: Request) -> dict[str, Any]:
    q = request.query_params
    return {"name": q.get("name", ""), "job": q.get("job", ""), "kind": q.get("kind", "daily"),
            "time": q.get("time", "09:00"), "timezone": q.get("timezone", "UTC"),
            "days": q.getlist("days")}  # fmt: skip


def schedules(request: Request, form: dict[str, Any] | None = None, problem: str = "",
              status: int = 200) -> Response:  # fmt: skip
    """Every schedule with its next fires, policies and last outcome; the create form."""
    dash = _dash(request)
    values = form or _query_form(request)
    wants_preview = form is not None or "time" in request.query_params
    fires, said = _preview(dash, values) if wants_preview else ([], "")
    jobs = sorted(j.name for j in dash.client.registry)
    return render(request, "schedules.html", status=status, schedules=_schedule_rows(dash),
                  jobs=jobs, form=values, fires=fires, spec=said if fires else "",
                  preview_problem="" if fires else said, problem=problem,
                  weekdays=WEEKDAYS)  # fmt: skip


def schedule_preview(request: Request) -> Response:
    """The preview fragment the create form refreshes as it is filled in."""
    fires, said = _preview(_dash(request), _query_form(request))
    return render(request, "_preview.html", fires=fires, spec=said if fires else "",
                  preview_problem="" if fires else said)  # fmt: skip


async def schedule_create(request: Request) -> Response:
    """Create a daily, weekdays or weekly schedule of a registered job."""
    _, raw = await action_form(request)
    values: dict[str, Any] = {**raw, "days": [d for d in raw.get("days", "").split(",") if d]}
    if raw.get("intent") == "preview":  # the form's Preview button, for browsers without script
        return await _call(schedules, request, values)
    try:
        name = values.get("name", "").strip()
        if not _NAME.match(name):
            raise WebError(422, "Name: letters, digits, '.', '_', ':' or '-' (up to 200).")
        spec, tz = _form_spec(values)
        new = NewSchedule(name=name, job_name=values.get("job", ""), spec=spec, timezone=tz,
                          source="api")  # fmt: skip
        dash = _dash(request)
        await _call(dash.client.create_schedule, new)
    except WebError as exc:
        return await _call(schedules, request, values, exc.message, exc.status)
    except Exception as exc:  # a service refusal: shown on the form, nothing created
        status = _refusal_status(exc)
        if status is None:
            raise
        return await _call(schedules, request, values, str(exc), status)
    return _back(request, "/schedules", "created")


def _refusal_status(exc: Exception) -> int | None:
    from duly.web.gate import _REFUSALS

    for cls, status in _REFUSALS:
        if isinstance(exc, cls):
            return status
    return None


async def schedule_action(request: Request) -> Response:
    """Pause, resume or trigger a schedule (trigger: a manual run now, shown on its page)."""
    action = _action(request, ("pause", "resume", "trigger"))
    await action_form(request)
    dash = _dash(request)
    name = str(request.path_params["name"])
    if action == "pause":
        await _call(dash.client.pause, name)
        return _back(request, "/schedules", "paused")
    if action == "resume":
        await _call(dash.client.resume, name)
        return _back(request, "/schedules", "resumed")
    row = await _call(dash.store.schedule_get, name)
    if row is None:
        raise WebError(404, f"No schedule named {name!r}.")
    run, _ = await _call(dash.client.trigger, row.job_name, dict(row.args))
    return _back(request, f"/runs/{run.id}", "triggered")


# -- runs -------------------------------------------------------------------------------


def _operation_link(dash: Any, run: RunRow) -> tuple[str, str] | None:
    ref = run.args.get("ref_id")
    if run.job_name == BALANCE_CHECK_JOB:
        return "/balance-checks", "the nightly balance check"
    if run.job_name == TRANSFER_JOB and isinstance(ref, int):
        return f"/transfers/{ref}", f"scheduled transfer {ref}"
    if run.job_name == RECURRING_JOB and isinstance(ref, int):
        occurrence = RecurringPayments(dash.client).occurrence(ref)
        if occurrence is not None:
            pid = occurrence.payment_id
            return f"/recurring/{pid}", f"recurring payment {pid} (occurrence {occurrence.seq})"
    return None


def run_detail(request: Request) -> Response:
    """A run: status, attempts, progress, summary, error, and what it belongs to."""
    dash = _dash(request)
    run = dash.client.run(_id(request))
    schedule = next((s for s in dash.store.schedule_list() if s.id == run.schedule_id), None)
    return render(request, "run.html", run=run, attempts=dash.client.attempts(run.id),
                  final=run.status in FINAL, schedule=schedule,
                  operation=_operation_link(dash, run))  # fmt: skip


async def run_action(request: Request) -> Response:
    """Cancel or retry a run."""
    action = _action(request, ("cancel", "retry"))
    await action_form(request)
    dash, run_id = _dash(request), _id(request)
    if action == "cancel":
        await _call(dash.client.cancel, run_id)
        return _back(request, f"/runs/{run_id}", "cancelled")
    await _call(dash.client.retry, run_id)
    return _back(request, f"/runs/{run_id}", "retried")


# -- the nightly balance check ------------------------------------------------------------


def balance_checks(request: Request) -> Response:
    """The last 30 nights: processed, passed, failed, errors by code, duration vs window."""
    dash = _dash(request)
    cfg = dash.settings.jobs.daily_balance_check
    window = timedelta(minutes=cfg.window_minutes)
    nights = last_nights(dash.store, window, 30)
    ordered = list(reversed(nights))
    chart = bar_chart(
        "Duration of each night's check, in minutes, against its window",
        [n.business_date.strftime("%d %b") for n in ordered],
        [Series("duration", "succeeded", [(n.duration_seconds or 0) / 60 for n in ordered])],
        unit=" min", limit=window.total_seconds() / 60,
        limit_label=f"window {cfg.window_minutes} min", every=max(1, len(ordered) // 10),
    )  # fmt: skip
    return render(request, "balance.html", nights=nights, chart=chart, window=window)


# -- transfers and recurring payments -------------------------------------------------------


def _find_customer(dash: Any, text: str) -> CustomerRow | None:
    people = Customers(dash.store.engine, dash.clock)
    text = text.strip()
    if text.isdigit() and 1 <= int(text) <= _MAX_ID:
        found: CustomerRow | None = people.get(int(text))
        if found is not None:
            return found
    return people.by_external_id(text) if 0 < len(text) <= 200 else None


def money(request: Request) -> Response:
    """Search by customer (id or external id): their transfers and recurring payments."""
    dash = _dash(request)
    query = request.query_params.get("customer", "")
    customer = _find_customer(dash, query) if query else None
    transfers = payments = []
    if customer is not None:
        transfers = ScheduledTransfers(dash.client).find(customer_id=customer.id, limit=200)
        payments = RecurringPayments(dash.client).find(customer_id=customer.id, limit=200)
    people = Customers(dash.store.engine, dash.clock).find(limit=50) if not query else []
    return render(request, "money.html", query=query, customer=customer, transfers=transfers,
                  payments=payments, people=people)  # fmt: skip


def transfer_detail(request: Request) -> Response:
    """A scheduled transfer and its run."""
    dash = _dash(request)
    row = ScheduledTransfers(dash.client).get(_id(request))
    if row is None:
        raise WebError(404, "No such transfer.")
    return render(request, "transfer.html", t=row)


async def transfer_cancel(request: Request) -> Response:
    """Cancel a transfer that has not started."""
    await action_form(request)
    transfer_id = _id(request)
    await _call(ScheduledTransfers(_dash(request).client).cancel, transfer_id)
    return _back(request, f"/transfers/{transfer_id}", "cancelled")


def payment_detail(request: Request) -> Response:
    """A recurring payment: terms, the next occurrences and the last ones made."""
    dash = _dash(request)
    service = RecurringPayments(dash.client)
    row = service.get(_id(request))
    if row is None:
        raise WebError(404, "No such recurring payment.")
    made = service.occurrences(row.id, after_seq=max(-1, row.next_index - 21), limit=20)
    return render(request, "payment.html", p=row, upcoming=service.preview(row.id, 5),
                  made=list(reversed(made)))  # fmt: skip


async def payment_action(request: Request) -> Response:
    """Pause, resume or cancel a recurring payment."""
    action = _action(request, ("pause", "resume", "cancel"))
    viewer, _ = await action_form(request)
    service = RecurringPayments(_dash(request).client)
    payment_id = _id(request)
    if action == "pause":
        await _call(service.pause, payment_id, f"paused by {viewer.principal.name}")
    elif action == "resume":
        await _call(service.resume, payment_id)
    else:
        await _call(service.cancel, payment_id)
    notice = {"pause": "paused", "resume": "resumed"}.get(action, "cancelled")
    return _back(request, f"/recurring/{payment_id}", notice)


# -- audit --------------------------------------------------------------------------------


def audit(request: Request) -> Response:
    """The chain's status, the recent events, and (asked for) a verification."""
    dash = _dash(request)
    status = dash.audit.status()
    events = dash.audit.list(AuditFilter(limit=50))
    report = dash.audit.verify() if request.query_params.get("verify") == "1" else None
    checked_at = dash.clock.now() if report is not None else None
    return render(request, "audit.html", chain=status, events=events, report=report,
                  checked_at=checked_at)  # fmt: skip


# -- routing --------------------------------------------------------------------------------


def routes() -> list[Route]:
    """Every page and action, relative to the mount point."""
    return [
        Route("/", operations, name="operations"),
        Route("/signin", signin_page, methods=["GET"]),
        Route("/signin", signin, methods=["POST"]),
        Route("/signout", signout, methods=["POST"]),
        Route("/alerts/{id}/{action:str}", alert_action, methods=["POST"]),
        Route("/errors", errors),
        Route("/errors/{id}", error_detail),
        Route("/errors/{id}/resolve", error_resolve, methods=["POST"]),
        Route("/schedules", schedules, methods=["GET"]),
        Route("/schedules", schedule_create, methods=["POST"]),
        Route("/schedules/preview", schedule_preview),
        Route("/schedules/{name}/{action:str}", schedule_action, methods=["POST"]),
        Route("/runs/{id}", run_detail),
        Route("/runs/{id}/{action:str}", run_action, methods=["POST"]),
        Route("/balance-checks", balance_checks),
        Route("/money", money),
        Route("/transfers/{id}", transfer_detail),
        Route("/transfers/{id}/cancel", transfer_cancel, methods=["POST"]),
        Route("/recurring/{id}", payment_detail),
        Route("/recurring/{id}/{action:str}", payment_action, methods=["POST"]),
        Route("/audit", audit),
    ]
