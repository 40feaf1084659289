"""gastrt on Ray (the optional ``gastrt[ray]`` extra): ``lift_corpus`` lifts a corpus of keypoint
files with Ray Data (corpus.py), ``build_app`` / ``gastrt serve`` serve an engine with Ray Serve
(serve.py), cli.py holds both commands. Importing this package never imports ray; the
functions do, and raise one GastrtError naming the extra when it is missing."""
from __future__ import annotations

from typing import Any

__all__ = ["lift_corpus", "build_app", "read_manifest"]


def lift_corpus(engine_path: Any, inputs: Any, out_dir: Any, **opts: Any) -> Any:
    """See ``gastrt.ray.corpus.lift_corpus``. -> the manifest (pandas DataFrame)."""
    from .corpus import lift_corpus as run
    return run(engine_path, inputs, out_dir, **opts)


def build_app(engine_path: Any, **opts: Any) -> Any:
    """See ``gastrt.ray.serve.build_app``. -> a Ray Serve application (``serve.run(app)``)."""
    from .corpus import require_ray
    require_ray("gastrt.ray.build_app", ("ray.serve", "fastapi"))
    from .serve import build_app as build
    return build(engine_path, **opts)


def read_manifest(out_dir: Any) -> Any:
    """``OUT_DIR/manifest.parquet`` of a corpus job as a pandas DataFrame."""
    import os

    import pandas as pd
    from .corpus import MANIFEST_NAME
    return pd.read_parquet(os.path.join(os.fspath(out_dir), MANIFEST_NAME))
