"""The error type for a user's bad input (file, option): the project's ``gastrt.errors``
user-error class when that module exists (``UserError``, else ``GastrtError``), else
``ValueError``. It is always a ValueError: the CLI prints one ``gastrt: error: ...`` line."""
from __future__ import annotations

try:  # the project's error module, when present
    from gastrt import errors as _errors  # type: ignore
    _Base = getattr(_errors, "UserError", None) or getattr(_errors, "GastrtError", ValueError)
except Exception:  # pragma: no cover - depends on the tree's state
    _Base = ValueError

if issubclass(_Base, ValueError):
    UserError = _Base
else:  # keep `except ValueError` working for library callers
    class UserError(_Base, ValueError):  # type: ignore[no-redef]
        pass

__all__ = ["UserError"]
