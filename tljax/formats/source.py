"""Reading foreign weight files into numpy, with strict bookkeeping of which keys were used."""
import os
import pickle
import zipfile

import numpy as np

from tljax.errors import UserError


def read_arrays(path):
    """{key: np.ndarray} from .safetensors, .npz, a PyTorch .pth/.bin state dict, or a Keras
    .h5 / .weights.h5 / .keras file (keys as formats/keras_files.py writes them)."""
    from tljax.formats import keras_files

    if keras_files.is_keras_file(path):
        return keras_files.read(path)
    try:
        if path.endswith(".safetensors"):
            from safetensors.numpy import load_file

            return dict(load_file(path))
        if path.endswith(".npz"):
            if not zipfile.is_zipfile(path):
                raise UserError(f"{path} is not an .npz archive (not a zip file); it may be "
                                f"truncated or mislabelled: download it again")
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        if path.endswith((".pth", ".pt", ".bin")):
            import torch  # Only needed for PyTorch pickles.

            state = torch.load(path, map_location="cpu", weights_only=True)
            for key in ("state_dict", "model"):
                if isinstance(state, dict) and isinstance(state.get(key), dict):
                    state = state[key]
            return {k: v.float().numpy() if v.is_floating_point() else v.numpy()
                    for k, v in state.items() if hasattr(v, "numpy")}
    except ImportError as e:
        raise UserError(f"reading {path} needs {e.name}; pip install it") from None
    except pickle.UnpicklingError:
        raise UserError(f"{path} holds pickled Python objects besides tensors, which tljax "
                        f"does not execute; save just the weights (torch.save(model.state_dict())"
                        f" or a .safetensors file) and load that") from None
    except (OSError, ValueError, zipfile.BadZipFile, RuntimeError, EOFError) as e:
        raise UserError(f"{path} is not a readable weights file ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:200]}); it may be truncated: download it again") from None
    raise UserError(f"unknown weights file type {os.path.basename(path)!r}: expected .safetensors, "
                    f".npz, .pth, .bin, or Keras .h5 / .keras")


class Arrays:
    """A source state dict; `take` marks keys as used so leftovers can be reported."""

    def __init__(self, arrays, source, ignore=()):
        self.arrays = arrays
        self.source = source
        self.ignore = tuple(ignore)
        self.used = set()
        self.missing = []

    def __contains__(self, key):
        return key in self.arrays

    def take(self, key):
        if key not in self.arrays:
            self.missing.append(key)
            return None
        self.used.add(key)
        return np.asarray(self.arrays[key], np.float32)

    def check(self):
        unexpected = sorted(k for k in self.arrays if k not in self.used
                            and not any(k.endswith(s) or k.startswith(s) for s in self.ignore))
        problems = []
        if self.missing:
            problems.append(f"missing keys {self.missing[:8]}" + (" ..." if len(self.missing) > 8 else ""))
        if unexpected:
            problems.append(f"unexpected keys {unexpected[:8]}" + (" ..." if len(unexpected) > 8 else ""))
        if problems:
            raise UserError(f"weights {self.source} do not match the expected layout: "
                            f"{'; '.join(problems)}. Is the model architecture (model=) right?")


def normalization_string(mean, std):
    """The preprocessing op that matches a mean/std normalisation of 0..1 inputs."""
    mean, std = [round(float(m), 4) for m in mean], [round(float(s), 4) for s in std]
    if mean == [0.5] * 3 and std == [0.5] * 3:
        return "value_range(-1,1)"
    return f"normalize({mean},{std})".replace(" ", "")


IMAGENET_NORM = normalization_string((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
MINUS_ONE_ONE = "value_range(-1,1)"
