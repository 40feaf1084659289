"""Errors users can cause. All are ValueError subclasses: the CLI prints one line for them."""


# An error message names what was wrong; it never carries a hostile file's 50 MB key whole.
MAX_MESSAGE_CHARS = 2000


def shorten(msg: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``msg`` itself when short, else its start and its end around " ... "."""
    if len(msg) <= limit:
        return msg
    tail = limit // 4
    return msg[:limit - tail - 5] + " ... " + msg[-tail:]


class GastrtError(ValueError):
    """A user-facing error: bad input, bad file, unsupported request. Messages longer than
    MAX_MESSAGE_CHARS are shortened (start ... end)."""

    def __init__(self, *args):
        if len(args) == 1 and isinstance(args[0], str):
            args = (shorten(args[0]),)
        super().__init__(*args)


class CheckpointMismatch(GastrtError):
    def __init__(self, family: str, detail: str):
        self.family = family
        self.detail = shorten(detail)
        super().__init__(f"checkpoint looks most like {family}, but {self.detail}")

    def __reduce__(self):   # Ray and multiprocessing pickle errors across processes
        return (type(self), (self.family, self.detail))


class EngineFileError(GastrtError):
    """Truncated, corrupted or too-new engine file."""


class NativeError(RuntimeError):
    """A failure inside the compiled runtime (a broken invariant, a CUDA error). The bindings
    translate the C++ exceptions (csrc/common/check.h) into this class and its subclasses,
    so callers test the type, never the message."""


class OutOfMemoryError(NativeError, MemoryError):
    """The device (or host staging) ran out of memory."""


class DeviceOutOfMemory(GastrtError, OutOfMemoryError):
    """A request too big for the device: the message says what to shrink (batch, frames, slots);
    the engine stays usable. Both a user error (one CLI line) and an OutOfMemoryError."""
