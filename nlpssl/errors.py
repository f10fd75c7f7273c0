"""User-facing errors: one line that says what was wrong and what to do."""

from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)


# Every character str.splitlines() breaks on, shown escaped ("\\n") instead.
_LINE_BREAKS = str.maketrans({c: c.encode("unicode_escape").decode() for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"})


class UserError(Exception):
    """An expected mistake in the user's input (a file, a config key, a column).

    Scripts print its message on one line and exit with status 2, no traceback.
    Messages echo user input (values, column names, lines of a file); a line
    break inside it is shown escaped, so the message stays one line.
    """

    def __init__(self, message: str = "") -> None:
        super().__init__(str(message).translate(_LINE_BREAKS))


def exit_on_user_error(main: F) -> F:
    """Decorate a script's ``main`` so a :class:`UserError` ends it with one line."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper  # type: ignore[return-value]


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty), for one-line errors.

    Example::

        raise UserError(f"cannot load 'x' ({first_line(error)})") from None
    """
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
