"""VGG16 / VGG19 (Simonyan & Zisserman 2015), layout of keras.applications `vgg16.py` /
`vgg19.py`: five blocks of 3x3 "same" convs with ReLU, each closed by a 2x2 max-pool, then
the classifier block (fc1, fc2: 4096 wide with ReLU) and the head ("predictions").

Names: block{b}/conv{i}, classifier/{fc1,fc2}, head. `top=False` is Keras' notop model
(`include_top=False, pooling="avg"`): the head reads the global average of the last block.
With the top, the last block's grid is flattened in NHWC order, as Keras does, so the
pretrained fc1 fits the input size it was built for (224 px: a 7x7 grid). Checkpoints (at the
end): Keras files.
"""
import math
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from tljax.errors import UserError
from tljax.models import family, layers, names, peft as peft_lib
from tljax.formats import keras_files, source
from tljax.formats.convert import Detected, Layout, match

# convs per block (keras.applications vgg16.py / vgg19.py)
DEPTHS = {16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
WIDTHS = (64, 128, 256, 512, 512)


class _Block(nn.Module):
    width: int
    convs: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        for i in range(self.convs):
            x = nn.relu(nn.Conv(self.width, (3, 3), padding="SAME", dtype=self.dtype,
                                name=f"conv{i + 1}")(x))
        return nn.max_pool(x, (2, 2), (2, 2))


class _Classifier(nn.Module):
    width: int
    dropout: float = 0.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train):
        for name in ("fc1", "fc2"):
            x = nn.relu(nn.Dense(self.width, dtype=self.dtype, name=name)(x))
            x = nn.Dropout(self.dropout)(x, deterministic=not train)
        return x


class VGG(nn.Module):
    num_classes: int
    depth: int = 16
    widths: Sequence[int] = WIDTHS   # per block; smaller for tiny test models
    fc_width: int = 4096
    top: bool = True                 # the fc1/fc2 classifier block (Keras include_top)
    dropout: float = 0.0             # after fc1 and fc2 (torchvision's 0.5; Keras has none)
    dtype: jnp.dtype = jnp.float32
    peft: peft_lib.Peft = peft_lib.NONE

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.astype(self.dtype)
        # LoRA's default targets: the classifier block's dense layers (tljax's LoRA takes dense
        # layers and 1x1 convs; VGG's convs are 3x3). Adapters follow each conv block.
        with peft_lib.intercept(self.peft, train, units=_Block, lora_default=r"classifier/fc[12]"):
            for b, (convs, width) in enumerate(zip(DEPTHS[self.depth], self.widths)):
                x = _Block(width, convs, self.dtype, name=f"block{b + 1}")(x)
            if self.top:
                x = x.reshape(x.shape[0], -1)
                x = _Classifier(self.fc_width, self.dropout, self.dtype, name="classifier")(x, train)
            else:
                x = x.mean(axis=(1, 2))
        return layers.classifier_head(self, x, train)  # its input: fc7 (fc2's output) with the top


def _groups(module):
    """The five conv blocks, the classifier block (fc1, fc2: "the final layers" a first
    transfer project retrains with last_k:1), the head."""
    blocks = [(f"block{b + 1}", rf"block{b + 1}/.*") for b in range(len(DEPTHS[module.depth]))]
    top = [("classifier", "classifier/.*")] if module.top else []
    return [*blocks, *top, (names.HEAD, f"{names.HEAD}/.*")]


# ------------------------------------------------------------------ checkpoints
# keras.applications VGG16/19 (formats/keras_files.py reads the file; layers matched by kind and
# build order), preprocessed as Keras' "caffe" mode: BGR, ImageNet mean subtracted.
def _keras_layout(depth):
    starts = [sum(DEPTHS[depth][:b]) for b in range(5)]
    dense = {"classifier/fc1": 0, "classifier/fc2": 1, names.HEAD: 2}

    def layout(path):
        if m := match(r"params/block(\d)/conv(\d)/(kernel|bias)", path):
            k = starts[int(m[1]) - 1] + int(m[2]) - 1
            return f"conv2d:{k}/{0 if m[3] == 'kernel' else 1}", "id"
        if m := match(rf"params/(classifier/fc1|classifier/fc2|{names.HEAD})/(kernel|bias)", path):
            return f"dense:{dense[m[1]]}/{0 if m[2] == 'kernel' else 1}", "id"
        return None
    return layout


def _from_keras(raw, path, model):
    if not keras_files.is_keras_model(raw, path) or keras_files.layer_count(raw, keras_files.BN):
        return None  # (a Keras VGG has no BatchNorm)
    convs, dense = keras_files.layer_count(raw, "conv2d"), keras_files.layer_count(raw, "dense")
    depth = {13: 16, 16: 19}.get(convs)
    if depth is None or dense not in (0, 3):
        raise UserError(f"{path}: a Keras VGG has 13 (VGG16) or 16 (VGG19) convolutions and 0 or 3 "
                        f"dense layers, not {convs} and {dense}")
    starts = [sum(DEPTHS[depth][:b]) for b in range(5)]
    widths = tuple(raw[f"conv2d:{k}/0"].shape[-1] for k in starts)
    arch = {"depth": depth, "widths": widths, "top": dense == 3}
    size, classes = keras_files.image_size(path), 0  # what a .keras file records
    if dense == 3:
        arch["fc_width"] = raw["dense:0/0"].shape[1]
        size = size or _square_size(raw["dense:0/0"].shape[0] // widths[-1], path)
        classes = raw["dense:2/0"].shape[1]
    return Detected("vgg", arch, classes, {"normalization": "caffe", "image_size": size or 224},
                    source.Arrays(raw, path), _keras_layout(depth))


def _square_size(cells, path):
    """The input size of a top whose file does not record it (.h5), from the grid fc1 reads
    (7x7 at 224 px); a grid that is not square could be either way round."""
    side = math.isqrt(cells)
    if side * side != cells:
        raise UserError(f"{path}: this VGG's fc1 reads a {cells}-cell grid, not a square one, and "
                        f"the file does not record its input's height and width: load the .keras "
                        f"file model.save() writes")
    return side * 32


FAMILY = family.Family("vgg", VGG, _groups,
                       layouts=(Layout(from_file=_from_keras, READS="Keras VGG16/19 (.h5, .keras)"),))
