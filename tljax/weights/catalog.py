"""Known public checkpoints: name -> URL, format, model family, preprocessing.

    python -m tljax.cli.catalog              # list them
    python -m tljax.cli.catalog BiT-M-R50x1  # download into the cache

Configs refer to them as model.init="catalog:NAME". Offline, a missing file is
an error that says where to put it after downloading it elsewhere.
"""
import os
import urllib.error
import urllib.request

from tljax import paths
from tljax.errors import UserError
from tljax.weights import hub

BIT = "https://storage.googleapis.com/bit_models/{}.npz"
VIT = "https://storage.googleapis.com/vit_models/{}.npz"
MINUS_ONE_ONE = "value_range(-1,1)"

CATALOG = {
    **{f"BiT-{s}-{a}": {"url": BIT.format(f"BiT-{s}-{a}"), "model": "bit", "resolution": 224,
                        "normalization": MINUS_ONE_ONE}
       for s in ("S", "M") for a in ("R50x1", "R50x3", "R101x1", "R101x3", "R152x2", "R152x4")},
    **{f"ViT-{v}": {"url": VIT.format(f"imagenet21k/ViT-{v}"), "model": "vit", "resolution": 224,
                    "normalization": MINUS_ONE_ONE}
       for v in ("B_16", "B_32", "L_16", "L_32")},
    "augreg-B_16-i21k": {"url": VIT.format("augreg/B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0"),
                         "model": "vit", "resolution": 224, "normalization": MINUS_ONE_ONE},
    "augreg-B_32-i21k": {"url": VIT.format("augreg/B_32-i21k-300ep-lr_0.001-aug_medium1-wd_0.03-do_0.0-sd_0.0"),
                         "model": "vit", "resolution": 224, "normalization": MINUS_ONE_ONE},
    "augreg-S_16-i21k": {"url": VIT.format("augreg/S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0"),
                         "model": "vit", "resolution": 224, "normalization": MINUS_ONE_ONE},
    "torchvision-resnet50": {"url": "https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
                             "model": "resnet", "resolution": 224,
                             "normalization": "normalize([0.485,0.456,0.406],[0.229,0.224,0.225])"},
}


# Backbones read from the Hugging Face hub by name (weights/hub.py), with the published number
# each one targets (ImageNet-1k top-1 %, under the protocol named) and where it was read.
_DINOV2 = "facebookresearch/dinov2 README.md"
_OPENCLIP = "mlfoundations/open_clip docs/openclip_results.csv"
HUB = {
    "dinov2-s14": ("hf:facebook/dinov2-small", "linear 81.1, k-NN 79.0", _DINOV2),
    "dinov2-b14": ("hf:facebook/dinov2-base", "linear 84.5, k-NN 82.1", _DINOV2),
    "dinov2-l14": ("hf:facebook/dinov2-large", "linear 86.3, k-NN 83.5", _DINOV2),
    "dinov2-g14": ("hf:facebook/dinov2-giant", "linear 86.5, k-NN 83.5", _DINOV2),
    "dinov2-s14-reg": ("hf:facebook/dinov2-with-registers-small", "linear 80.9, k-NN 79.1", _DINOV2),
    "dinov2-b14-reg": ("hf:facebook/dinov2-with-registers-base", "linear 84.6, k-NN 82.0", _DINOV2),
    "dinov2-l14-reg": ("hf:facebook/dinov2-with-registers-large", "linear 86.7, k-NN 83.8", _DINOV2),
    "dinov2-g14-reg": ("hf:facebook/dinov2-with-registers-giant", "linear 87.1, k-NN 83.7", _DINOV2),
    "clip-b32": ("hf:openai/clip-vit-base-patch32", "zero-shot 63.3", _OPENCLIP),
    "clip-b16": ("hf:openai/clip-vit-base-patch16", "zero-shot 68.3", _OPENCLIP),
    "clip-l14": ("hf:openai/clip-vit-large-patch14", "zero-shot 75.5", _OPENCLIP),
    "siglip-b16": ("hf:google/siglip-base-patch16-224", "zero-shot 76.0", _OPENCLIP),
    "siglip-so400m14": ("hf:google/siglip-so400m-patch14-384", "zero-shot 82.0", _OPENCLIP),
    "siglip2-b16": ("hf:google/siglip2-base-patch16-224", "", ""),
}


def cache_dir():
    return os.environ.get("TLJAX_WEIGHTS_DIR", os.path.join(paths.cache_root(), "weights"))


def local_path(name):
    entry = CATALOG[name]
    return os.path.join(cache_dir(), os.path.basename(entry["url"]))


def resolve(source, download=True):
    """A local path for `source`; "catalog:NAME" is looked up (and downloaded if missing),
    "hf:ORG/NAME" and "timm:NAME" come through huggingface_hub (weights/hub.py)."""
    if hub.is_hub_name(source):
        return hub.resolve(source)
    if not str(source).startswith("catalog:"):
        return source
    name = source.split(":", 1)[1]
    if name not in CATALOG:
        raise UserError(f"unknown catalogue checkpoint {name!r}; known: {', '.join(sorted(CATALOG))}")
    path = local_path(name)
    if os.path.exists(path):
        return path
    if not download:
        raise UserError(f"{name} is not downloaded: fetch {CATALOG[name]['url']} and put it at {path}")
    return fetch(name)


def fetch(name):
    """Downloads NAME into the cache atomically; offline it says where to put the file."""
    url, path = CATALOG[name]["url"], local_path(name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".part"
    try:
        urllib.request.urlretrieve(url, tmp)
    except (urllib.error.URLError, OSError) as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise UserError(f"cannot download {name} from {url} ({getattr(e, 'reason', e)}); on a machine "
                        f"with internet download it and put it at {path} (or set TLJAX_WEIGHTS_DIR)") from None
    os.replace(tmp, path)
    return path
