"""scikit-learn's handwritten digits as a local TFDS dataset (no download needed).

The transfer task of the offline default: digits 0-4 are the source task
(pretraining), digits 5-9 the target task. Labels are within-task (digit % 5),
the original digit is kept in `digit`. Images are the native 8x8 grey-levels
scaled from 0..16 to 0..255; the input pipeline resizes them.

Splits: `source_train` / `source_test` (every 5th source image is test) and
`target` (all 1797 - 901 = 896 target images; few-shot selection happens in the
pipeline so that k and the seed are config values).
"""
import numpy as np
import tensorflow_datasets as tfds


class TljaxDigits(tfds.core.GeneratorBasedBuilder):
    """sklearn digits split into a 0-4 source task and a 5-9 target task."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Source 0-4 / target 5-9 split of sklearn digits."}

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(8, 8, 1)),
                "label": tfds.features.ClassLabel(num_classes=5),
                "digit": tfds.features.ClassLabel(num_classes=10),
            }),
            supervised_keys=("image", "label"),
            homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # The data ships inside scikit-learn.
        return {name: self._generate_examples(name)
                for name in ("source_train", "source_test", "target")}

    def _generate_examples(self, split):
        from sklearn.datasets import load_digits  # Imported lazily: only needed to build.

        digits = load_digits()
        images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
        source_count = 0
        for index, (image, digit) in enumerate(zip(images, digits.target)):
            digit = int(digit)
            if digit < 5:
                is_test = source_count % 5 == 0
                source_count += 1
                if split != ("source_test" if is_test else "source_train"):
                    continue
            elif split != "target":
                continue
            yield index, {"image": image, "label": digit % 5, "digit": digit}
