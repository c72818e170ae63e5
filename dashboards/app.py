"""The Dash application: the page shell, routing, and the login that guards the fraud and billing pages.

``create_app(url, settings)`` builds the app around one :class:`~dashboards.queries.Queries`. The
control room (``/``) and the meter page (``/meter/<serial>``) are open to anyone who reaches the
server; ``/fraud`` needs the ``fraud`` role and ``/billing`` the ``billing`` role (``admin`` opens
both). The Flask side redirects a request for a protected page without such a session to
``/login?next=…``, and every callback of a protected page checks the session again, so the data
cannot be fetched around the page either.
"""

from __future__ import annotations

import html as html_escape
import secrets
from typing import Any
from urllib.parse import quote

import flask
from dash import Dash, Input, Output, dcc, html

from dashboards import auth
from dashboards.pages import billing, control, fraud, meter
from dashboards.queries import Queries
from releve.settings import Settings

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; background: #f4f6f9;
       color: #1f2933; }
.topbar { display: flex; align-items: center; gap: 24px; background: #17324d; color: white; padding: 10px 24px; }
.topbar a { color: #d7e3f0; text-decoration: none; font-weight: 500; }
.topbar a:hover { color: white; }
.topbar .brand { font-weight: 700; font-size: 18px; color: white; margin-right: 12px; }
.topbar .who { margin-left: auto; font-size: 13px; color: #b8c7d6; }
.content { padding: 12px 24px 40px; }
h2 { margin: 8px 0 4px; } h4 { margin: 4px 0 8px; }
.muted { color: #607080; font-size: 13px; margin: 2px 0 8px; }
.kpis { display: flex; flex-wrap: wrap; gap: 10px; margin: 10px 0; }
.kpi { background: white; border-radius: 6px; padding: 8px 14px; min-width: 120px; box-shadow: 0 1px 2px #0002;
       border-top: 3px solid #90a4ae; }
.kpi.good { border-top-color: #2e7d32; }
.kpi.warn { border-top-color: #f9a825; } .kpi.bad { border-top-color: #c62828; }
.kpi-value { font-size: 22px; font-weight: 700; } .kpi-label { font-size: 12px; color: #607080; }
.row { display: flex; gap: 12px; flex-wrap: wrap; }
.panel { background: white; border-radius: 6px; padding: 10px 12px; margin: 6px 0; box-shadow: 0 1px 2px #0002;
         box-sizing: border-box; }
.half { flex: 1 1 560px; min-width: 0; } .third { flex: 1 1 360px; min-width: 0; }
.form-row { display: flex; gap: 10px; align-items: center; flex-wrap: wrap; margin: 6px 0; }
.form-row label { font-size: 13px; color: #445; }
button { background: #17324d; color: white; border: 0; border-radius: 4px; padding: 6px 14px; cursor: pointer; }
button.secondary { background: #607d8b; } button.danger { background: #b71c1c; }
.ok { color: #2e7d32; font-weight: 600; } .error { color: #c62828; font-weight: 600; }
.reasons li { margin: 2px 0; }
.dash-spreadsheet-container .dash-spreadsheet-inner input:not([type=radio]):not([type=checkbox]) { min-width: 0; }
"""

INDEX = (
    """<!DOCTYPE html>
<html>
<head>{%metas%}<title>Relevé</title><link rel="icon" href="data:,">{%css%}<style>"""
    + CSS
    + """</style></head>
<body>{%app_entry%}<footer>{%config%}{%scripts%}{%renderer%}</footer></body>
</html>"""
)

LOGIN = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Relevé — log in</title><link rel="icon" href="data:,">
<style>{css} .login {{ max-width: 340px; margin: 80px auto; background: white; padding: 24px; border-radius: 8px;
box-shadow: 0 1px 4px #0003; }}
.login input {{ width: 100%; padding: 6px; margin: 4px 0 12px; box-sizing: border-box; }}
</style></head>
<body><div class="topbar"><span class="brand">Relevé</span><a href="/">Control room</a></div>
<form class="login" method="post" action="/login">
<h2>Log in</h2><p class="muted">{why}</p>{error}
<input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="next" value="{next}">
<label>User<input id="username" name="username" autocomplete="username" autofocus></label>
<label>Password<input id="password" name="password" type="password" autocomplete="current-password"></label>
<button id="login-submit" type="submit">Log in</button>
</form></body></html>"""


def current_user() -> tuple[str | None, list[str]]:
    """The logged-in user and roles of this request's session."""
    return flask.session.get("user"), list(flask.session.get("roles") or [])


def require(page: str) -> str:
    """The user name when the session may use ``page``; raise PreventUpdate otherwise."""
    from dash.exceptions import PreventUpdate

    user, roles = current_user()
    if user is None or not auth.allowed(roles, page):
        raise PreventUpdate
    return user


def _safe_next(target: str | None) -> str:
    """Only local paths are followed after login."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


def create_app(url: str, settings: Settings, queries: Queries | None = None, refresh_ms: int = 30_000) -> Dash:
    """The dashboards as a Dash app (its Flask server is ``app.server``)."""
    q = queries or Queries(url, settings)
    q.warm_up()
    server = flask.Flask("releve-dashboards")
    server.secret_key = auth.secret_key(settings)
    server.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")
    server_arg: Any = server
    app = Dash(
        __name__,
        server=server_arg,
        title="Relevé",
        suppress_callback_exceptions=True,
        update_title="",
        assets_folder="__no_assets__",
    )
    app.index_string = INDEX

    @server.before_request
    def guard() -> Any:
        path = flask.request.path.rstrip("/") or "/"
        if path in auth.PAGE_ROLES:
            _, roles = current_user()
            if not auth.allowed(roles, path):
                return flask.redirect("/login?next=" + quote(path))
        return None

    def login_page(why: str, error: str = "", nxt: str = "/") -> str:
        token = secrets.token_urlsafe(16)
        flask.session["csrf"] = token
        err = f'<p class="error" id="login-error">{html_escape.escape(error)}</p>' if error else ""
        return LOGIN.format(css=CSS, why=html_escape.escape(why), error=err, csrf=token,
                            next=html_escape.escape(_safe_next(nxt)))  # fmt: skip

    @server.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        if flask.request.method == "GET":
            nxt = flask.request.args.get("next", "/")
            need = auth.PAGE_ROLES.get(nxt, "")
            why = f"The {nxt.strip('/')} page needs the '{need}' (or 'admin') role." if need else "Log in."
            return login_page(why, nxt=nxt)
        form = flask.request.form
        nxt = _safe_next(form.get("next"))
        if not secrets.compare_digest(form.get("csrf", ""), flask.session.get("csrf", "") or "-"):
            return login_page("Log in.", "The form expired; try again.", nxt)
        user = form.get("username", "").strip()
        roles = q.check_login(user, form.get("password", ""))
        if roles is None:
            return login_page("Log in.", "Unknown user or wrong password.", nxt)  # 200: a form shown again
        flask.session.clear()
        flask.session.update(user=user, roles=roles)
        if not auth.allowed(roles, nxt):
            return flask.redirect("/")
        return flask.redirect(nxt)

    @server.route("/logout")
    def logout() -> Any:
        flask.session.clear()
        return flask.redirect("/")

    app.layout = html.Div([
        dcc.Location(id="url"),
        html.Div(id="topbar", className="topbar"),
        html.Div(id="page", className="content"),
    ])  # fmt: skip

    @app.callback(Output("topbar", "children"), Output("page", "children"), Input("url", "pathname"))
    def route(path: str | None) -> tuple[Any, Any]:
        path = path or "/"
        user, roles = current_user()
        bar = [html.Span("Relevé", className="brand"), html.A("Control room", href="/", id="nav-control"),
               html.A("Meter", href="/meter", id="nav-meter"), html.A("Fraud unit", href="/fraud", id="nav-fraud"),
               html.A("Billing", href="/billing", id="nav-billing"),
               html.Span([f"{user} ({', '.join(roles)}) · ", html.A("log out", href="/logout")] if user
                         else [html.A("log in", href="/login")], className="who")]  # fmt: skip
        page = path.rstrip("/") or "/"
        if page in auth.PAGE_ROLES and not auth.allowed(roles, page):
            return bar, html.Div([html.H2("Login required"),
                                  html.A("Log in", href="/login?next=" + quote(page), id="login-link")])  # fmt: skip
        if page == "/":
            return bar, control.layout(q, refresh_ms)
        if page == "/meter" or page.startswith("/meter/"):
            return bar, meter.layout(q, page.removeprefix("/meter").strip("/"))
        if page == "/fraud":
            return bar, fraud.layout(q)
        if page == "/billing":
            return bar, billing.layout(q)
        return bar, html.Div([html.H2("Not found"), html.A("Control room", href="/")])

    control.register(app, q)
    meter.register(app, q)
    fraud.register(app, q)
    billing.register(app, q)
    app.queries = q  # type: ignore[attr-defined]
    return app
