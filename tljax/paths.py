"""Workdir paths as `etils.epath.Path`, so runs may live on local disks or in buckets (gs://)."""
import json
import math
import os

from etils import epath


def resolve(path):
    """`path` as an epath.Path: URLs stay as they are, local paths become absolute (orbax
    needs absolute paths; `os.path.abspath` would turn gs://b into <cwd>/gs:/b)."""
    text = os.fspath(path)
    if "://" in text:
        return epath.Path(text)
    return epath.Path(os.path.abspath(os.path.expanduser(text)))


def cache_root():
    """tljax's cache folder (init recipes' weights, downloaded weights, XLA executables):
    $TLJAX_CACHE, else ~/.cache/tljax."""
    return os.environ.get("TLJAX_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "tljax"))


def write_bytes_atomic(path, data):
    """Writes via a temporary file and a rename, so a reader never sees half a file."""
    path = epath.Path(path)
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_bytes(data)
    tmp.replace(path)


def write_text_atomic(path, text):
    write_bytes_atomic(path, text.encode())


def _finite_or_text(value):
    """Non-finite floats as the strings "nan", "inf", "-inf" (float() reads them back)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite_or_text(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_text(v) for v in value]
    return value


def strict_json(value, **kwargs):
    """JSON that every parser accepts: no NaN/Infinity tokens."""
    return json.dumps(_finite_or_text(value), allow_nan=False, **kwargs)


def write_json(path, value):
    write_text_atomic(path, strict_json(value, indent=2) + "\n")


def read_json(path):
    return json.loads(epath.Path(path).read_text())
