"""Known public checkpoints: name -> URL, format, model family, preprocessing.

    tljax catalog              # list them
    tljax catalog BiT-M-R50x1  # download into the cache

Configs refer to them as model.init="catalog:NAME". Offline, a missing file is
an error that says where to put it after downloading it elsewhere.
"""
import os
import urllib.error
import urllib.request
from typing import NamedTuple

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


class Backbone(NamedTuple):
    """A pretrained backbone by short name (configs/DATASET.py:NAME): its model.init, family,
    the published number it targets (ImageNet-1k top-1 %, under the protocol named), and
    where that number was read."""
    init: str
    family: str
    published: str
    source: str


_DINOV2 = "facebookresearch/dinov2 README.md"
_OPENCLIP = "mlfoundations/open_clip docs/openclip_results.csv"
_TIMM = "huggingface/pytorch-image-models results/results-imagenet.csv"
_KERAS_TABLE = "keras.io/api/applications (the table of Keras' own evaluation)"
BACKBONES = {
    "dinov2-s14": Backbone("hf:facebook/dinov2-small", "vit", "linear 81.1, k-NN 79.0", _DINOV2),
    "dinov2-b14": Backbone("hf:facebook/dinov2-base", "vit", "linear 84.5, k-NN 82.1", _DINOV2),
    "dinov2-l14": Backbone("hf:facebook/dinov2-large", "vit", "linear 86.3, k-NN 83.5", _DINOV2),
    "dinov2-g14": Backbone("hf:facebook/dinov2-giant", "vit", "linear 86.5, k-NN 83.5", _DINOV2),
    "dinov2-s14-reg": Backbone("hf:facebook/dinov2-with-registers-small", "vit", "linear 80.9, k-NN 79.1", _DINOV2),
    "dinov2-b14-reg": Backbone("hf:facebook/dinov2-with-registers-base", "vit", "linear 84.6, k-NN 82.0", _DINOV2),
    "dinov2-l14-reg": Backbone("hf:facebook/dinov2-with-registers-large", "vit", "linear 86.7, k-NN 83.8", _DINOV2),
    "dinov2-g14-reg": Backbone("hf:facebook/dinov2-with-registers-giant", "vit", "linear 87.1, k-NN 83.7", _DINOV2),
    "clip-b32": Backbone("hf:openai/clip-vit-base-patch32", "vit", "zero-shot 63.3", _OPENCLIP),
    "clip-b16": Backbone("hf:openai/clip-vit-base-patch16", "vit", "zero-shot 68.3", _OPENCLIP),
    "clip-l14": Backbone("hf:openai/clip-vit-large-patch14", "vit", "zero-shot 75.5", _OPENCLIP),
    "siglip-b16": Backbone("hf:google/siglip-base-patch16-224", "vit", "zero-shot 76.0", _OPENCLIP),
    "siglip-so400m14": Backbone("hf:google/siglip-so400m-patch14-384", "vit", "zero-shot 82.0", _OPENCLIP),
    "siglip2-b16": Backbone("hf:google/siglip2-base-patch16-224", "vit", "", ""),
    "convnext-t": Backbone("timm:convnext_tiny.fb_in22k_ft_in1k", "convnext", "fine-tuned 82.9", _TIMM),
    "convnext-b": Backbone("timm:convnext_base.fb_in22k_ft_in1k", "convnext", "fine-tuned 85.8", _TIMM),
    "vgg16": Backbone("keras:VGG16", "vgg", "71.3", _KERAS_TABLE),
    "vgg19": Backbone("keras:VGG19", "vgg", "71.3", _KERAS_TABLE),
    "mobilenet_v2": Backbone("keras:MobileNetV2", "mobilenet_v2", "71.3", _KERAS_TABLE),
    "inception_v3": Backbone("keras:InceptionV3", "inception_v3", "77.9", _KERAS_TABLE),
}


# keras:NAME -> the file keras.applications downloads for NAME(weights="imagenet") into the
# Keras cache, $KERAS_HOME/models or ~/.keras/models (keras/src/applications/vgg16.py, vgg19.py,
# mobilenet_v2.py, inception_v3.py: WEIGHTS_PATH, WEIGHTS_PATH_NO_TOP, BASE_WEIGHT_PATH).
_KERAS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
KERAS = {
    "VGG16": "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels.h5",
    "VGG16-notop": "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "VGG19": "vgg19/vgg19_weights_tf_dim_ordering_tf_kernels.h5",
    "VGG19-notop": "vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "MobileNetV2": "mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5",
    "MobileNetV2-notop": "mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
    "InceptionV3": "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
    "InceptionV3-notop": "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
}


def keras_cache_dir():
    """Where keras.applications keeps its downloads (keras/src/backend/config.py keras_home)."""
    return os.path.join(os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras")), "models")


def _keras_file(name):
    if name not in KERAS:
        raise UserError(f"unknown Keras application {name!r} (model.init=keras:NAME); known: "
                        f"{', '.join(KERAS)}")
    path = os.path.join(keras_cache_dir(), os.path.basename(KERAS[name]))
    return path if os.path.exists(path) else _download(_KERAS_URL + KERAS[name], path, f"keras:{name}",
                                                         "KERAS_HOME")


def cache_dir():
    return os.environ.get("TLJAX_WEIGHTS_DIR", os.path.join(paths.cache_root(), "weights"))


def local_path(name):
    entry = CATALOG[name]
    return os.path.join(cache_dir(), os.path.basename(entry["url"]))


def resolve(source, download=True):
    """A local path for `source`; "catalog:NAME" is looked up (and downloaded if missing),
    "hf:ORG/NAME" and "timm:NAME" come through huggingface_hub (weights/hub.py), "keras:NAME"
    is the keras.applications file in the Keras cache (downloaded there if missing)."""
    if hub.is_hub_name(source):
        return hub.resolve(source)
    if str(source).startswith("keras:"):
        return _keras_file(str(source).split(":", 1)[1])
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
    return _download(CATALOG[name]["url"], local_path(name), name)


def _download(url, path, name, cache_variable="TLJAX_WEIGHTS_DIR"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".part"
    try:
        urllib.request.urlretrieve(url, tmp)
    except (urllib.error.URLError, OSError) as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise UserError(f"cannot download {name} from {url} ({getattr(e, 'reason', e)}); on a machine "
                        f"with internet download it and put it at {path} (or set {cache_variable})") from None
    os.replace(tmp, path)
    return path
