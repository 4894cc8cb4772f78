"""structlog, configured once: one line per processed event, JSON when not on a terminal.

Every line has ``event`` (what happened), ``level`` and ``timestamp`` (ISO 8601, UTC).
The gateway writes exactly one line per message it handles
(tests/component/test_log_lines.py):

- ``event`` (info): ``event_id``, ``type``, ``dwelling`` (``building/dwelling``) and
  ``forwarded`` (the destinations that got a copy); unless ``INTERCOM_LOG_EVENTS=false``;
- ``settings`` (info): ``dwelling``, ``kind``, ``applied``, ``detail``;
- ``rejected`` (warning): ``reason``, ``topic``, ``detail``; or ``dead-lettered``
  (error): ``topic``, ``detail``.

An error of the gateway's own adds an ``internal error`` line (error) before the
rejection's. Lines of the gateway's life (``gateway online``, ...) are not per message.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure(level: str = "INFO", *, json: bool | None = None) -> None:
    if json is None:
        json = not sys.stderr.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
