"""Users (role ``admin``): who may log in with which roles, and the logins being throttled right now.

Users are created, changed and removed from the command line (``releve dashboard adduser``,
``passwd``, ``deluser``), where the password is typed and never travels through a web form.
"""

from __future__ import annotations

from typing import Any

from dash import Dash, Input, Output, html

from dashboards.components import static_table
from dashboards.queries import Queries
from dashboards.throttle import LoginThrottle

PAGE = "/users"


def layout(q: Queries) -> html.Div:
    """The page (its callback fills it)."""
    return html.Div(
        [
            html.H2("Users"),
            html.P(
                "Create, change or remove a login on the server: releve dashboard adduser NAME --role R "
                "(operator, fraud, billing, admin; repeat --role), releve dashboard passwd NAME, "
                "releve dashboard deluser NAME.",
                className="muted",
            ),
            html.Button("Refresh", id="us-refresh", className="secondary"),
            html.Div(id="us-users", className="panel"),
            html.H4("Throttled logins"),
            html.P(
                "Accounts and addresses with failed logins in a row; locked ones refuse every login until the "
                "time shown has passed.",
                className="muted",
            ),
            html.Div(id="us-throttle", className="panel"),
        ]
    )


def register(app: Dash, q: Queries, throttle: LoginThrottle) -> None:
    """The users page's callback."""

    @app.callback(Output("us-users", "children"), Output("us-throttle", "children"), Input("us-refresh", "n_clicks"))
    def refresh(_: int | None) -> tuple[Any, Any]:
        users = static_table(
            "us-users-table",
            q.users(),
            [
                ("username", "user"),
                ("roles", "roles"),
                ("disabled", "disabled"),
                ("hash", "password hash"),
                ("created_at", "created (UTC)"),
                ("updated_at", "changed (UTC)"),
            ],
            page_size=20,
        )
        state = throttle.state()
        locks: Any = (
            static_table(
                "us-throttle-table",
                state,
                [
                    ("kind", "kind"),
                    ("key", "account / address"),
                    ("failures", "failures in a row"),
                    ("locked_for_s", "locked for (s)"),
                ],
            )
            if state
            else html.P("No failed login.", id="us-no-throttle", className="muted")
        )
        return users, locks
