"""Structured logs: one JSON object per line, with the request id when there is one."""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any, TextIO

import structlog

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


def _add_request_id(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    rid = request_id_var.get()
    if rid is not None:
        event.setdefault("request_id", rid)
    return event


# Keys that must never reach a log line: uvicorn's ANSI-coloured copy of its message.
_DROPPED_KEYS = ("color_message",)
# A traceback's exception lines are cut to this: a message is for telling errors apart, not a dump.
_MAX_MESSAGE_CHARS = 300


def _drop_noise(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in _DROPPED_KEYS:
        event.pop(key, None)
    return event


def _exception_line(exc: BaseException) -> str:
    """Type and first line of the message. SQLAlchemy appends the statement and its
    ``[parameters: ...]`` (row contents, e-mail addresses, prompts) and psycopg a DETAIL line
    with key values after the first line: neither belongs in a log."""
    lines = str(exc).strip().splitlines()
    name = f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins.")
    return f"{name}: {lines[0][:_MAX_MESSAGE_CHARS]}" if lines else name


def _exception_chain(exc: BaseException) -> list[BaseException]:
    """The exception and its causes/contexts, outermost cause first (as Python prints them)."""
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return chain[::-1]


def safe_traceback(exc: BaseException) -> str:
    """The traceback text (frames and source lines, no local variables) with every exception
    reduced to its first line; exception groups list their members the same way."""
    parts = []
    for link in _exception_chain(exc):
        frames = "".join(traceback.format_tb(link.__traceback__))
        text = f"Traceback (most recent call last):\n{frames}{_exception_line(link)}"
        if isinstance(link, BaseExceptionGroup):
            text += "".join(f"\n  [{i}] {safe_traceback(sub)}".replace("\n", "\n  ")
                            for i, sub in enumerate(link.exceptions, 1))
        parts.append(text)
    return "\n\nDuring handling, or as the cause, of the above:\n\n".join(parts)


def _render_exception(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Turns ``exc_info`` into text: the JSON renderer would print ``<traceback object at 0x…>``,
    and structlog's own formatter would print the full messages, SQL parameters included."""
    exc_info = event.pop("exc_info", None)
    if exc_info is True:
        exc_info = sys.exc_info()
    exc = exc_info[1] if isinstance(exc_info, tuple) else exc_info
    if isinstance(exc, BaseException):
        event["exception"] = safe_traceback(exc)
        event.setdefault("error", type(exc).__name__)
    return event


class CurrentStderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stderr`` is when a record is emitted.

    Binding the stream object at configure time outlives whoever swapped ``sys.stderr`` in the
    meantime: pytest's capture and typer's ``CliRunner`` replace it with a buffer they close
    afterwards, and every later record (often from a server or worker thread) then fails with
    "I/O operation on closed file". The stdlib's last-resort handler resolves it the same way.
    """

    def __init__(self, level: int = logging.NOTSET) -> None:
        # Handler's, not StreamHandler's, __init__: there is no stream to store.
        logging.Handler.__init__(self, level)

    @property
    def stream(self) -> TextIO:
        return sys.stderr


def configure_logging(*, json: bool = True, level: int = logging.INFO) -> None:
    shared: list[structlog.types.Processor] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_request_id,
        structlog.stdlib.ExtraAdder(),
        _drop_noise,
    ]
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    handler = CurrentStderrHandler()
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _render_exception, renderer],
        foreign_pre_chain=shared,
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access log would duplicate our one-line-per-request log; Alembic's plugin
    # chatter at every start says nothing an operator needs.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("alembic").setLevel(logging.WARNING)
