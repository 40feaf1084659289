"""Errors users can cause. All are ValueError subclasses: the CLI prints one line for them."""


class GastrtError(ValueError):
    """A user-facing error: bad input, bad file, unsupported request."""


class CheckpointMismatch(GastrtError):
    def __init__(self, family: str, detail: str):
        self.family = family
        self.detail = detail
        super().__init__(f"checkpoint looks most like {family}, but {detail}")


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
