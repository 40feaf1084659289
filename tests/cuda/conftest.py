"""tests/cuda: sibling helpers (_models, sim_engine) importable whatever pytest's import mode;
gastrt from the source tree only when it is not installed (an installed build has _native)."""
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
if _here not in sys.path:
    sys.path.insert(0, _here)
try:
    import gastrt  # noqa: F401  (only: is it importable?)
except ImportError:
    sys.path.insert(0, os.path.join(_here, "..", "..", "python"))
