"""Stanford Dogs (120 breeds), tfds `stanford_dogs`: train[:90%] trains, train[90%:] selects
(validation), test (8580) reports. The first transfer project many people do: VGG16 trained on
ImageNet, its final layers retrained on dog breeds.

    python -m tljax.main --config=configs/dogs.py --workdir=/tmp/dogs              # keras:VGG16
    python -m tljax.main --config=configs/dogs.py:mobilenet_v2 --workdir=/tmp/dogs_mnv2
    python -m tljax.main --config=configs/dogs.py:convnext-b --workdir=/tmp/dogs_cnx \\
        --config.freeze=full

Model arguments: vgg16 (default), vgg19, mobilenet_v2, inception_v3, convnext-t, convnext-b,
and every other model of configs/transfer.py. Default schedule `last_k:1`: the top depth unit
and a new head train (VGG: its classifier block fc1, fc2; MobileNetV2: its last 1x1 conv;
InceptionV3: mixed10; ConvNeXt: the last stage), the rest stays frozen and costs no backward
pass. Recipe: configs/transfer.py's
big_vision one at 224 px (InceptionV3 299; 2000 steps, lr 0.01, resize-small crops); no source publishes one for
this dataset and these models.
"""
from configs import transfer


def get_config(arg="vgg16"):
    c = transfer.config("stanford_dogs", ("train[:90%]", "train[90%:]", "test"), arg,
                        {"steps": 2000, "warmup": 100, "lr": 0.01, "crop": "resmall_crop"})
    c.freeze = "last_k:1"
    return c
