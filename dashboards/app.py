"""The Dash application: the page shell, routing, logins, roles and the security of every response.

``create_app(url, settings)`` builds the app around one :class:`~dashboards.queries.Queries`. Every
page needs a login: ``/`` and ``/meter/<serial>`` the ``operator`` role, ``/fraud`` ``fraud``,
``/billing``, ``/bill/<id>`` and ``/accounts[/<number>]`` ``billing``, ``/field`` ``field``, ``/users``
``admin`` (a user may hold several). The Flask side decides
before any Dash code runs:

- without a valid session, a page is redirected to ``/login?next=…`` and every other route
  (Dash's layout, callbacks, scripts) answers 401; the login form is all an anonymous user sees;
- with one, a page the roles do not open answers 403, and so does a callback whose outputs belong
  to such a page (each callback is tied to the page module that registered it);
- a session holds the user, the stamp of its password hash and the login time; it ends after
  ``dashboard.session_idle_minutes`` without a request, ``dashboard.session_max_hours`` after the
  login, or at the next request after the user's password was changed or the user removed;
- logins are throttled per account and per client address (:mod:`dashboards.throttle`).

Every response carries a Content-Security-Policy that Dash works under (scripts from the server
itself and the hashes of Dash's own inline scripts only), ``X-Frame-Options: DENY``,
``Referrer-Policy: no-referrer``, ``X-Content-Type-Options: nosniff``, and ``Cache-Control:
no-store`` on everything but Dash's versioned static files.
"""

from __future__ import annotations

import html as html_escape
import logging
import secrets
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import flask
from dash import Dash, Input, Output, dcc, html
from werkzeug.middleware.proxy_fix import ProxyFix

from dashboards import auth
from dashboards.pages import accounts, bill, billing, control, field, fraud, meter, users
from dashboards.queries import Queries
from dashboards.throttle import LoginThrottle, Policy
from releve.settings import Settings

log = logging.getLogger(__name__)

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; background: #f4f6f9;
       color: #1f2933; }
.topbar { display: flex; align-items: center; gap: 24px; background: #17324d; color: white; padding: 10px 24px; }
.topbar a { color: #d7e3f0; text-decoration: none; font-weight: 500; }
.topbar a:hover { color: white; }
.topbar .brand { font-weight: 700; font-size: 18px; color: white; margin-right: 12px; }
.topbar .who { margin-left: auto; font-size: 13px; color: #b8c7d6; }
.facts th { text-align: left; padding: 3px 16px 3px 0; color: #455a64; font-weight: 600; }
a.button { display: inline-block; background: #1565c0; color: white; padding: 6px 14px; border-radius: 4px;
           text-decoration: none; margin: 4px 0 12px; }
.preparing { background: #fff8e1; border: 1px solid #f9a825; padding: 8px 12px; border-radius: 4px; }
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
<body><div class="topbar"><span class="brand">Relevé</span></div>
<form class="login" method="post" action="/login">
<h2>Log in</h2><p class="muted">{why}</p>{error}
<input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="next" value="{next}">
<label>User<input id="username" name="username" autocomplete="username" autofocus></label>
<label>Password<input id="password" name="password" type="password" autocomplete="current-password"></label>
<button id="login-submit" type="submit">Log in</button>
</form></body></html>"""


FORBIDDEN = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Relevé — not for your roles</title><link rel="icon" href="data:,">
<style>{css}</style></head>
<body><div class="topbar"><span class="brand">Relevé</span>{links}
<span class="who">{user} · <a href="/logout">log out</a></span></div>
<div class="content"><h2 id="forbidden">Not for your roles</h2>
<p>{page} needs the '{need}' role; you hold {roles}.</p></div></body></html>"""

#: Dash's versioned static files: the only responses a browser may cache.
STATIC_PREFIX = "/_dash-component-suites/"
USER_CACHE_S = 2.0


def _safe_next(target: str | None) -> str:
    """Only local paths are followed after login."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


class _UserCache:
    """Each user's roles and password stamp, read again at most every few seconds."""

    def __init__(self, q: Queries, ttl: float = USER_CACHE_S) -> None:
        self.q, self.ttl = q, ttl
        self._seen: dict[str, tuple[float, auth.UserState | None]] = {}
        self._lock = threading.Lock()

    def get(self, username: str) -> auth.UserState | None:
        now = time.monotonic()
        with self._lock:
            hit = self._seen.get(username)
        if hit and now - hit[0] < self.ttl:
            return hit[1]
        state = self.q.user_state(username)
        with self._lock:
            if len(self._seen) > 10_000:
                self._seen.clear()
            self._seen[username] = (now, state)
        return state

    def forget(self, username: str) -> None:
        with self._lock:
            self._seen.pop(username, None)


def content_security_policy(app: Dash) -> str:
    """A CSP under which Dash and Plotly work: no inline script but Dash's own (by hash), nothing remote."""
    hashes = " ".join(app.csp_hashes())  # already quoted: 'sha256-…'
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src 'self' {hashes}",
            "style-src 'self' 'unsafe-inline'",  # Dash components and Plotly set inline styles
            "img-src 'self' data: blob:",
            "font-src 'self' data:",
            "connect-src 'self'",
            "worker-src 'self' blob:",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def create_app(
    url: str,
    settings: Settings,
    queries: Queries | None = None,
    refresh_ms: int = 30_000,
    throttle: LoginThrottle | None = None,
    preparing: Callable[[], str] | None = None,
) -> Dash:
    """The dashboards as a Dash app (its Flask server is ``app.server``).

    ``preparing``: what is still being prepared (``releve demo`` serves the pages while it loads history,
    validates, ranks and bills); every page says it on top while it is not empty.
    """
    conf = settings.dashboard
    q = queries or Queries(url, settings)
    q.warm_up()
    limits = throttle or LoginThrottle(
        Policy(conf.login_failures, conf.lockout_seconds, conf.lockout_max_seconds),
        Policy(conf.address_failures, conf.lockout_seconds, conf.lockout_max_seconds),
    )
    known = _UserCache(q)
    server = flask.Flask("releve-dashboards")
    server.secret_key = auth.secret_key(settings)
    server.config.update(
        SESSION_COOKIE_NAME="releve_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=conf.secure_cookie,
        SESSION_REFRESH_EACH_REQUEST=True,
        PERMANENT_SESSION_LIFETIME=timedelta(minutes=conf.session_idle_minutes),
        MAX_CONTENT_LENGTH=1 << 20,
    )
    if conf.trusted_proxies:
        n = conf.trusted_proxies
        server.wsgi_app = ProxyFix(server.wsgi_app, x_for=n, x_proto=n, x_host=n)  # type: ignore[method-assign]
    server_arg: Any = server
    app = Dash(
        __name__,
        server=server_arg,
        title="Relevé",
        suppress_callback_exceptions=True,
        update_title="",
        assets_folder="__no_assets__",
        serve_locally=True,
    )
    app.index_string = INDEX
    #: Which page each callback belongs to (its output key → the page's role), filled as pages register.
    callback_roles: dict[str, str] = {}

    def session_user() -> tuple[str, tuple[str, ...]] | None:
        """The user of a valid session; an expired or outdated session is cleared."""
        user = flask.session.get("user")
        if not user:
            return None
        state = known.get(user)
        too_old = time.time() - float(flask.session.get("login_at", 0)) > conf.session_max_hours * 3600
        if state is None or too_old or not secrets.compare_digest(state.stamp, flask.session.get("stamp", "")):
            log.info("session of %s ended (%s)", user, "expired" if too_old else "user changed or removed")
            flask.session.clear()
            return None
        return user, state.roles

    @server.before_request
    def guard() -> Any:
        path = flask.request.path
        if path in ("/login", "/logout"):
            return None
        who = session_user()
        if who is not None:
            flask.g.user, flask.g.roles = who
        if path.startswith("/_"):  # Dash's own routes: layout, dependencies, callbacks, scripts
            if who is None:
                return flask.Response("log in first\n", 401, mimetype="text/plain")
            if path == "/_dash-update-component":
                return _check_callback(who)
            return None
        if who is None:
            return flask.redirect("/login?next=" + quote(path))
        need = auth.page_role(path)
        if need is not None and need not in who[1]:
            log.warning("refused %s to %s (roles %s)", path, who[0], ",".join(who[1]))
            return forbidden(who, path, need)
        return None

    def _check_callback(who: tuple[str, tuple[str, ...]]) -> Any:
        origin = flask.request.headers.get("Origin")
        if origin and urlsplit(origin).netloc != flask.request.host:
            return flask.Response("cross-origin request refused\n", 403, mimetype="text/plain")
        if not flask.request.is_json:
            return flask.Response("a callback is JSON\n", 400, mimetype="text/plain")
        body = flask.request.get_json(silent=True) or {}
        output = body.get("output") if isinstance(body, dict) else None
        if not isinstance(output, str) or (output not in callback_roles and output not in app.callback_map):
            return flask.Response("no such callback\n", 403, mimetype="text/plain")
        need = callback_roles.get(output)
        if need is not None and need not in who[1]:
            log.warning("refused callback %s to %s (roles %s)", output, who[0], ",".join(who[1]))
            return flask.Response(f"this callback needs the {need} role\n", 403, mimetype="text/plain")
        return None

    def forbidden(who: tuple[str, tuple[str, ...]], path: str, need: str) -> flask.Response:
        links = "".join(f'<a href="{p}">{label}</a>' for p, label in auth.pages_for(who[1]))
        page = FORBIDDEN.format(
            css=CSS,
            links=links,
            user=html_escape.escape(who[0]),
            page=html_escape.escape(path),
            need=need,
            roles=html_escape.escape(", ".join(who[1]) or "no role"),
        )
        return flask.Response(page, 403)

    @server.route("/bill/<int:bill_id>.pdf")
    def bill_pdf(bill_id: int) -> flask.Response:
        """The bill as a PDF (the guard above has checked the billing role)."""
        from dashboards.bills import bill_pdf as render

        found = q.bill(bill_id)
        if found is None:
            return flask.Response(f"there is no bill {bill_id}\n", 404, mimetype="text/plain")
        return flask.Response(
            render(found),
            mimetype="application/pdf",
            headers={"Content-Disposition": f'attachment; filename="bill-{bill_id}.pdf"'},
        )

    @server.after_request
    def headers(response: flask.Response) -> flask.Response:
        h = response.headers
        h["Content-Security-Policy"] = csp
        h["X-Frame-Options"] = "DENY"
        h["X-Content-Type-Options"] = "nosniff"
        h["Referrer-Policy"] = "no-referrer"
        h["Cross-Origin-Opener-Policy"] = "same-origin"
        h["Cross-Origin-Resource-Policy"] = "same-origin"
        h["Permissions-Policy"] = "camera=(), microphone=(), geolocation=(), payment=()"
        if flask.request.is_secure:
            h["Strict-Transport-Security"] = "max-age=31536000"
        if not flask.request.path.startswith(STATIC_PREFIX):
            h["Cache-Control"] = "no-store"
            h["Pragma"] = "no-cache"
        return response

    def login_page(why: str, error: str = "", nxt: str = "/", status: int = 200) -> flask.Response:
        token = secrets.token_urlsafe(16)
        flask.session["csrf"] = token
        err = f'<p class="error" id="login-error">{html_escape.escape(error)}</p>' if error else ""
        page = LOGIN.format(
            css=CSS, why=html_escape.escape(why), error=err, csrf=token, next=html_escape.escape(_safe_next(nxt))
        )
        return flask.Response(page, status)

    @server.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        if flask.request.method == "GET":
            nxt = _safe_next(flask.request.args.get("next", "/"))
            need = auth.page_role(nxt)
            why = f"{nxt} needs the '{need}' role." if need and nxt != "/" else "Log in."
            return login_page(why, nxt=nxt)
        form = flask.request.form
        nxt = _safe_next(form.get("next"))
        if not secrets.compare_digest(form.get("csrf", ""), flask.session.get("csrf", "") or "-"):
            return login_page("Log in.", "The form expired; try again.", nxt)
        user = form.get("username", "").strip()[:64]
        address = flask.request.remote_addr or "?"
        wait = limits.locked(user, address)
        if wait > 0:
            log.warning("login refused for %r from %s: locked for %.0f s more", user, address, wait)
            return login_page("Log in.", f"Too many failed logins: try again in {wait:.0f} s.", nxt, 429)
        state = q.check_login(user, form.get("password", ""))
        if state is None:
            lock = limits.failure(user, address)
            log.warning("failed login for %r from %s", user, address)
            if lock:
                return login_page("Log in.", f"Too many failed logins: try again in {lock:.0f} s.", nxt, 429)
            return login_page("Log in.", "Unknown user or wrong password.", nxt)  # 200: a form shown again
        limits.success(user)
        known.forget(user)
        log.info("login of %s from %s", user, address)
        flask.session.clear()  # a fresh session: nothing carried over from before the login
        flask.session.permanent = True
        flask.session.update(user=user, stamp=state.stamp, login_at=time.time())
        if auth.allowed(state.roles, nxt):
            return flask.redirect(nxt)
        mine = auth.pages_for(state.roles)
        return flask.redirect(mine[0][0] if mine else "/")

    @server.route("/logout")
    def logout() -> Any:
        flask.session.clear()
        return flask.redirect("/login")

    app.layout = html.Div(
        [
            dcc.Location(id="url"),
            html.Div(id="topbar", className="topbar"),
            html.Div(id="page", className="content"),
        ]
    )

    @app.callback(Output("topbar", "children"), Output("page", "children"), Input("url", "pathname"))
    def route(path: str | None) -> tuple[Any, Any]:
        bar, page = pick(path)
        note = preparing() if preparing is not None else ""
        if note:
            page = html.Div(
                [
                    html.P(
                        f"Still being prepared: {note}. The figures fill in as it lands; reload the page to see more.",
                        className="preparing",
                        id="preparing",
                    ),
                    page,
                ]
            )
        return bar, page

    def pick(path: str | None) -> tuple[Any, Any]:
        path = path or "/"
        user, roles = auth.current_user()
        ids = {
            "/": "nav-control",
            "/meter": "nav-meter",
            "/fraud": "nav-fraud",
            "/billing": "nav-billing",
            "/accounts": "nav-accounts",
            "/field": "nav-field",
            "/users": "nav-users",
        }
        bar = [
            html.Span("Relevé", className="brand"),
            *[html.A(label, href=p, id=ids[p]) for p, label in auth.pages_for(roles)],
            html.Span([f"{user} ({', '.join(roles)}) · ", html.A("log out", href="/logout")], className="who"),
        ]
        page = path.rstrip("/") or "/"
        need = auth.page_role(page)
        if need is not None and need not in roles:
            return bar, html.Div(
                [html.H2("Not for your roles", id="forbidden"), html.P(f"{page} needs the '{need}' role.")]
            )
        if page == "/":
            return bar, control.layout(q, refresh_ms)
        if page == "/meter" or page.startswith("/meter/"):
            return bar, meter.layout(q, page.removeprefix("/meter").strip("/"))
        if page == "/fraud" or page.startswith("/fraud/"):
            return bar, fraud.layout(q, page.removeprefix("/fraud").strip("/"))
        if page == "/billing":
            return bar, billing.layout(q)
        if page.startswith("/bill/"):
            return bar, bill.layout(q, page.removeprefix("/bill/"))
        if page == "/accounts" or page.startswith("/accounts/"):
            return bar, accounts.layout(q, page.removeprefix("/accounts").strip("/"))
        if page == "/field":
            return bar, field.layout(q, refresh_ms)
        if page == "/users":
            return bar, users.layout(q)
        return bar, html.Div([html.H2("Not found"), html.A("Control room", href="/")])

    def registered(role: str, register: Any, *args: Any) -> None:
        before = set(app.callback_map)
        register(app, q, *args)
        for key in set(app.callback_map) - before:
            callback_roles[key] = role

    registered("operator", control.register)
    registered("operator", meter.register)
    registered("fraud", fraud.register)
    registered("billing", billing.register)
    registered("billing", accounts.register)
    registered("field", field.register)
    registered("admin", users.register, limits)
    csp = content_security_policy(app)
    app.queries = q  # type: ignore[attr-defined]
    app.throttle = limits  # type: ignore[attr-defined]
    return app
