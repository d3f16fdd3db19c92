"""The console's ASGI app (Starlette): pages rendered on the server, fragments polled by htmx.

``build_app`` takes a ``Console`` (state, deployments, actions, sessions) and returns the
app; the CLI runs it under uvicorn. JSON twins of the pages (``/api/...``) serve the charts
and scripts.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from agent.errors import AgentError
from agent.fleet.console.actions import COMMAND_OPS, Actions, list_bundles
from agent.fleet.console.auth import COOKIE, Session, Sessions
from agent.fleet.console.series import CHARTS
from agent.fleet.console.snapshots import LatestImages
from agent.fleet.console.state import FleetState
from agent.fleet.console.views import STATUS_FILTERS, fleets, select, table_row

HERE = Path(__file__).resolve().parent
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]


@dataclass
class Console:
    state: FleetState
    actions: Actions
    sessions: Sessions
    broker: str
    allowed_hosts: list[str]
    images: LatestImages | None = None  # the devices' published snapshots


def build_app(console: Console) -> Starlette:
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    sessions = console.sessions

    def session_of(request: Request) -> Session | None:
        return sessions.get(request.cookies.get(COOKIE))

    def set_cookie(request: Request, response: Response, session: Session) -> None:
        # Secure whenever the browser reached us over HTTPS (a TLS proxy sets
        # X-Forwarded-Proto); plain HTTP is for loopback, where browsers keep it local.
        response.set_cookie(
            COOKIE,
            session.token,
            max_age=int(sessions.ttl_s),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    def page(request: Request, name: str, session: Session, **context: Any) -> Response:
        context.update(csrf=session.csrf, login=sessions.login_required, broker=console.broker)
        return templates.TemplateResponse(request, name, context)

    def guarded(handler: Any) -> Any:
        async def wrapper(request: Request) -> Response:
            session = session_of(request)
            if session is None and not sessions.login_required:
                if request.method == "POST":  # no session, so no CSRF token either
                    return Response("no session: reload the page", status_code=403)
                session = sessions.new(user=False)  # loopback without a password
                response: Response = await handler(request, session)
                set_cookie(request, response, session)
                return response
            if session is None or not sessions.allowed(session):
                if request.url.path.startswith(("/api/", "/fragment/")):
                    return JSONResponse({"error": "login required"}, status_code=401)
                return RedirectResponse("/login", status_code=303)
            if request.method == "POST":
                form = await form_of(request)
                if form.get("csrf", [""])[0] != session.csrf:
                    return Response("bad or missing CSRF token", status_code=403)
            done: Response = await handler(request, session)
            return done

        return wrapper

    async def form_of(request: Request) -> dict[str, list[str]]:
        if "form" not in request.scope.setdefault("state", {}):
            body = (await request.body())[: 64 * 1024]
            request.scope["state"]["form"] = parse_qs(body.decode("utf-8", "replace"))
        form: dict[str, list[str]] = request.scope["state"]["form"]
        return form

    def fleet_rows(request: Request) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        q = request.query_params
        fleet, status, sort = q.get("fleet", ""), q.get("status", "all"), q.get("sort", "device")
        desc = q.get("desc", "") == "1"
        rows = console.state.rows()
        chosen = select(rows, fleet, status, sort, descending=desc)
        opts = {
            "fleet": fleet,
            "status": status,
            "sort": sort,
            "desc": desc,
            "fleets": fleets(rows),
        }
        return [table_row(r) for r in chosen], opts

    @guarded
    async def index(request: Request, session: Session) -> Response:
        rows, opts = fleet_rows(request)
        return page(request, "fleet.html", session, rows=rows, opts=opts, statuses=STATUS_FILTERS)

    @guarded
    async def fleet_fragment(request: Request, session: Session) -> Response:
        rows, opts = fleet_rows(request)
        return page(request, "fleet_table.html", session, rows=rows, opts=opts)

    @guarded
    async def fleet_api(_request: Request, _session: Session) -> Response:
        return JSONResponse({"devices": console.state.rows()})

    def device_context(device: str) -> dict[str, Any]:
        entry = console.state.devices().get(device)
        row = next((r for r in console.state.rows() if r["device"] == device), None)
        ops = sorted(
            ((k, v) for k, v in (entry or {}).get("ops", {}).items()),
            key=lambda kv: -float(kv[1].get("ts") or 0.0),
        )
        snapshot = next(
            (k for k, v in ops if k.startswith("snapshot/") and v.get("status") == "successful"),
            None,
        )
        image = console.images.get(device) if console.images is not None else None
        return {
            "device": device,
            "known": entry is not None,
            "row": table_row(row) if row else None,
            "health": (entry or {}).get("health"),
            "alarms": (entry or {}).get("alarms", {}),
            "ops": ops[:20],
            "snapshot": snapshot.split("/", 1)[1] if snapshot else None,
            "image": None
            if image is None
            else {
                "camera": image.camera,
                "seq": image.seq,
                "bytes": len(image.jpeg),
                "received": time.strftime("%H:%M:%S", time.localtime(image.received_at)),
            },
            "stats": console.state.last_stats(device),
            "commands": COMMAND_OPS,
        }

    @guarded
    async def device_page(request: Request, session: Session) -> Response:
        ctx = device_context(request.path_params["device"])
        return page(request, "device.html", session, charts=CHARTS, **ctx)

    @guarded
    async def device_fragment(request: Request, session: Session) -> Response:
        ctx = device_context(request.path_params["device"])
        return page(request, "device_detail.html", session, **ctx)

    @guarded
    async def charts_api(request: Request, _session: Session) -> Response:
        device = request.path_params["device"]
        return JSONResponse({"device": device, "charts": console.state.charts(device)})

    @guarded
    async def snapshot_image(request: Request, _session: Session) -> Response:
        device, cmd_id = request.path_params["device"], request.path_params["cmd_id"]
        doc = console.state.devices().get(device, {}).get("ops", {}).get(f"snapshot/{cmd_id}")
        result = (doc or {}).get("result") or {}
        try:
            data = base64.b64decode(str(result.get("jpeg_b64", "")), validate=True)
        except (binascii.Error, ValueError):
            data = b""
        if not data:
            return Response("no snapshot", status_code=404)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @guarded
    async def published_image(request: Request, _session: Session) -> Response:
        device = request.path_params["device"]
        image = console.images.get(device) if console.images is not None else None
        if image is None:
            return Response("no snapshot published", status_code=404)
        # The URL carries the image's seq (?v=): a new image is a new URL, so caching is safe.
        headers = {"Cache-Control": "private, max-age=3600", "X-Camera": image.camera}
        return Response(image.jpeg, media_type="image/jpeg", headers=headers)

    def deployments_context() -> dict[str, Any]:
        rollouts = console.actions.deployments.views()
        devices = console.state.devices()
        for rollout in rollouts:  # the shadow trial's figures, from the devices' op states
            for stage in rollout["stages"]:
                for device, state in stage["states"].items():
                    op = (
                        devices.get(device, {})
                        .get("ops", {})
                        .get(f"model_update/{stage['deployment_id']}", {})
                    )
                    state["shadow"] = op.get("shadow") if isinstance(op, dict) else None
        return {"rollouts": rollouts, "now": time.time()}

    @guarded
    async def deployments_page(request: Request, session: Session) -> Response:
        bundles = list_bundles(console.actions.bundles_dir)
        return page(
            request,
            "deployments.html",
            session,
            bundles=bundles,
            bundles_dir=console.actions.bundles_dir,
            **deployments_context(),
        )

    @guarded
    async def deployments_fragment(request: Request, session: Session) -> Response:
        return page(request, "deployments_list.html", session, **deployments_context())

    @guarded
    async def deployments_api(_request: Request, _session: Session) -> Response:
        return JSONResponse({"rollouts": console.actions.deployments.views()})

    @guarded
    async def ask(request: Request, session: Session) -> Response:
        form = await form_of(request)
        try:
            token, pending = console.actions.describe(session.token, form)
        except (AgentError, ValueError) as exc:
            return page(request, "confirm.html", session, error=str(exc), pending=None)
        return page(request, "confirm.html", session, token=token, pending=pending, error="")

    @guarded
    async def do(request: Request, session: Session) -> Response:
        form = await form_of(request)
        try:
            target = console.actions.confirm(session.token, form.get("token", [""])[0])
        except AgentError as exc:
            return page(request, "confirm.html", session, error=str(exc), pending=None)
        return RedirectResponse(target, status_code=303)

    async def login_page(request: Request) -> Response:
        context = {"error": "", "needs_tls": needs_tls(request), "login": True}
        return templates.TemplateResponse(request, "login.html", context)

    async def login(request: Request) -> Response:
        form = await form_of(request)
        session = sessions.login(form.get("password", [""])[0])
        if session is None:
            context = {"error": "wrong password", "needs_tls": needs_tls(request), "login": True}
            return templates.TemplateResponse(request, "login.html", context, status_code=401)
        response = RedirectResponse("/", status_code=303)
        set_cookie(request, response, session)
        return response

    @guarded
    async def logout(request: Request, _session: Session) -> Response:
        sessions.end(request.cookies.get(COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    def needs_tls(request: Request) -> bool:
        host = request.client.host if request.client else ""
        return request.url.scheme != "https" and host not in LOOPBACK_HOSTS

    routes = [
        Route("/", index),
        Route("/fragment/fleet", fleet_fragment),
        Route("/api/fleet", fleet_api),
        Route("/device/{device}", device_page),
        Route("/fragment/device/{device}", device_fragment),
        Route("/api/device/{device}/charts", charts_api),
        Route("/snapshot/{device}/{cmd_id}.jpg", snapshot_image),
        Route("/device/{device}/snapshot.jpg", published_image),
        Route("/deployments", deployments_page),
        Route("/fragment/deployments", deployments_fragment),
        Route("/api/deployments", deployments_api),
        Route("/confirm", ask, methods=["POST"]),
        Route("/do", do, methods=["POST"]),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=console.allowed_hosts)]
    return Starlette(routes=routes, middleware=middleware)
