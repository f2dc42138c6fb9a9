"""Templates, their formatting filters, and the headers every console page carries."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from starlette.responses import HTMLResponse, Response

from app.console.session import CSRF_FIELD, ConsoleSession, Operator

# Nothing but this origin's files: no inline script or style (so an injected tag does nothing),
# images from here or data: URIs, no framing, forms only back to us.
CONSOLE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
PAGE_HEADERS = {"Content-Security-Policy": CONSOLE_CSP, "Cache-Control": "no-store"}

# Symbols for the currencies Stripe operators use most; others are written as their ISO code.
_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥"}
# Currencies Stripe counts in whole units (no cents).
_ZERO_DECIMAL = {"jpy", "krw", "vnd", "clp", "isk", "ugx", "xof", "xaf"}


def num(value: Any, digits: int = 0) -> str:
    """12345 -> 12,345; None -> an em dash (unlimited or unknown is said by the column's heading)."""
    if value is None:
        return "—"
    if isinstance(value, (float, Decimal)) and digits:
        return f"{value:,.{digits}f}"
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() else f"{value:,.2f}"
    return f"{value:,}"


def money(minor: int | None, currency: str = "usd") -> str:
    if minor is None:
        return "—"
    code = currency.lower()
    amount = Decimal(minor) if code in _ZERO_DECIMAL else Decimal(minor) / 100
    places = 0 if code in _ZERO_DECIMAL else 2
    text = f"{amount:,.{places}f}"
    symbol = _SYMBOLS.get(code)
    return f"{symbol}{text}" if symbol else f"{text} {code.upper()}"


def usd(amount: Decimal | float | None) -> str:
    return "—" if amount is None else f"${Decimal(amount):,.2f}"


def when(value: datetime | None, *, seconds: bool = False) -> Markup:
    """A moment in UTC with its offset written out, machine-readable in <time>."""
    if value is None:
        return Markup("—")
    utc = value.astimezone(UTC)
    shown = utc.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    return Markup('<time datetime="{}">{} UTC+00:00</time>').format(utc.isoformat(), shown)


def day(value: date | None) -> str:
    return "—" if value is None else value.isoformat()


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{hours // 24} d {hours % 24} h"


def percent(fraction: float | None) -> str:
    return "—" if fraction is None else f"{fraction * 100:.0f} %"


_env = Environment(loader=PackageLoader("app.console", "templates"), autoescape=select_autoescape(["html"]),
                   undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_env.filters.update(num=num, money=money, usd=usd, when=when, day=day, duration=duration, percent=percent)


@dataclass(frozen=True)
class Pager:
    """Where a limit/offset table stands, and the links to its neighbours."""

    path: str
    params: Mapping[str, Any]
    offset: int
    limit: int
    shown: int
    has_more: bool

    def _link(self, offset: int) -> str:
        query = {k: v for k, v in self.params.items() if v not in (None, "")}
        if offset:
            query["offset"] = offset
        return f"{self.path}?{urlencode(query)}" if query else self.path

    @property
    def previous(self) -> str | None:
        return self._link(max(0, self.offset - self.limit)) if self.offset > 0 else None

    @property
    def next(self) -> str | None:
        return self._link(self.offset + self.limit) if self.has_more else None

    @property
    def first_row(self) -> int:
        return self.offset + 1 if self.shown else 0

    @property
    def last_row(self) -> int:
        return self.offset + self.shown


def page_of(rows: list[Any], *, path: str, params: Mapping[str, Any], offset: int, limit: int
            ) -> tuple[list[Any], Pager]:
    """Rows fetched with ``limit + 1``: the page, and its pager (one extra row means there is a next page)."""
    shown = rows[:limit]
    return shown, Pager(path=path, params=params, offset=offset, limit=limit, shown=len(shown),
                        has_more=len(rows) > limit)


def link(request: Request, path: str, **params: Any) -> str:
    """A path of this service (behind a proxy's root path) with its query."""
    root = request.scope.get("root_path", "").rstrip("/")
    query = {k: v for k, v in params.items() if v not in (None, "")}
    return f"{root}{path}" + (f"?{urlencode(query)}" if query else "")


def csrf_input(session: ConsoleSession) -> Markup:
    return Markup('<input type="hidden" name="{}" value="{}">').format(CSRF_FIELD, session.csrf)


def render(request: Request, template: str, context: Mapping[str, Any], *, operator: Operator | None,
           session: ConsoleSession, status_code: int = 200, section: str = "") -> HTMLResponse:
    """A console page: the layout (navigation for what this key may open), this session's one-time
    messages, and the strict policy headers."""
    root = request.scope.get("root_path", "").rstrip("/")
    html = _env.get_template(template).render(
        **context, request=request, operator=operator, section=section, root=root,
        flash=session.take_flash(), csrf=csrf_input(session),
        link=lambda path, **params: link(request, path, **params),
    )
    return HTMLResponse(html, status_code=status_code, headers=PAGE_HEADERS)


def error_page(request: Request, status_code: int, title: str, message: str, *, operator: Operator | None,
               session: ConsoleSession) -> HTMLResponse:
    return render(request, "error.html", {"title": title, "message": message, "status_code": status_code},
                  operator=operator, session=session, status_code=status_code)


def download(body: str, *, filename: str, media_type: str) -> Response:
    return Response(body, media_type=media_type, headers={
        "Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store",
        "Content-Security-Policy": CONSOLE_CSP})
