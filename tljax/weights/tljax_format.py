"""tljax's own weights file: safetensors with '/'-joined parameter paths + JSON metadata.

Metadata holds everything needed to rebuild the model and feed it correctly:
model family, architecture kwargs, number of classes and preprocessing.
"""
import json
from typing import NamedTuple, Optional

import numpy as np
from flax import traverse_util
from safetensors import SafetensorError
from safetensors import numpy as safetensors_numpy
from safetensors.numpy import load_file

from tljax import paths
from tljax.errors import UserError

FORMAT = "tljax"


class Export(NamedTuple):
    model: str             # family name for tljax.models.build
    arch: dict             # architecture kwargs
    num_classes: int
    preprocessing: dict    # normalization (op), image_size and pp_eval (the run's eval pp)
    variables: dict
    class_names: Optional[list]  # label i is class_names[i]; None when not recorded


def save(path, variables, *, model, arch, num_classes, preprocessing, class_names=None):
    """Writes `variables` ({'params': ..., 'batch_stats': ...}) atomically to `path` (local or URL)."""
    flat = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(variables, sep="/").items()}
    meta = {"format": FORMAT, "model": model, "arch": json.dumps(arch),
            "num_classes": str(num_classes), "preprocessing": json.dumps(preprocessing)}
    if class_names is not None:
        meta["class_names"] = json.dumps(list(class_names))
    paths.write_bytes_atomic(path, _sorted_header(safetensors_numpy.save(flat, metadata=meta)))


def _sorted_header(blob):
    """safetensors bytes with the JSON header's keys sorted, so equal weights give equal files
    (safetensors writes the header from a hash map, whose order varies between processes).
    The sorted header has the same length, so the data offsets stay valid."""
    size = int.from_bytes(blob[:8], "little")
    header = json.dumps(json.loads(blob[8:8 + size]), sort_keys=True, separators=(",", ":"))
    header = header.encode().ljust(size, b" ")
    if len(header) != size:  # Never expected; keep the original rather than break the file.
        return blob
    return blob[:8] + header + blob[8 + size:]


def read_metadata(path):
    import safetensors

    try:
        with safetensors.safe_open(path, framework="numpy") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path} is not a readable safetensors file ({e}); re-export or "
                        f"re-download it") from None


def is_tljax_file(path):
    return str(path).endswith(".safetensors") and read_metadata(path).get("format") == FORMAT


def load(path):
    """The Export in `path`."""
    meta = read_metadata(path)
    try:
        arrays = load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path} is not a readable safetensors file ({e})") from None
    variables = traverse_util.unflatten_dict(arrays, sep="/")
    names = json.loads(meta["class_names"]) if "class_names" in meta else None
    return Export(meta["model"], json.loads(meta["arch"]), int(meta["num_classes"]),
                  json.loads(meta["preprocessing"]), variables, names)
