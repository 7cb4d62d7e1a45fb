"""keras.applications VGG16, MobileNetV2 and InceptionV3 loaded from each Keras file format
(legacy .h5 as keras.applications downloads it, Keras 3 .weights.h5, .keras): logits equal to
tf.keras' own models built with random weights, in float32; configs/dogs.py end to end."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")
h5py = pytest.importorskip("h5py")

import jax  # noqa: E402

from tljax import models, weights  # noqa: E402
from tljax.errors import UserError  # noqa: E402

from tests.helpers import relative_error  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def _keras_model(name, **kw):
    """A keras.applications model with random weights everywhere (biases, BatchNorm
    statistics too), logits out."""
    model = getattr(keras.applications, name)(weights=None, classifier_activation=None, **kw)
    rng = np.random.default_rng(0)
    for w in model.weights:
        shape = tuple(w.shape)
        if "moving_variance" in w.path:
            w.assign(0.5 + rng.uniform(size=shape))
        elif len(shape) == 1:
            w.assign(0.1 * rng.normal(size=shape) + (1.0 if "gamma" in w.path else 0.0))
        else:  # He-like scale keeps activations O(1) through the depth
            fan_in = np.prod(shape[:-1]) if "depthwise" not in w.path else np.prod(shape[:2])
            w.assign(rng.normal(size=shape) * np.sqrt(2.0 / fan_in))
    return model


def _load_each_format(model, folder, **kwargs):
    """The model loaded from each Keras format: the first as loaded, with the others checked
    to hold the same arrays (one forward pass then covers all three)."""
    from flax import traverse_util

    loaded = [weights.load_model(path, **kwargs) for path in _keras_files(model, folder)]
    first = traverse_util.flatten_dict(loaded[0].variables, sep="/")
    for other in loaded[1:]:
        assert other.module == loaded[0].module and other.preprocessing == loaded[0].preprocessing
        flat = traverse_util.flatten_dict(other.variables, sep="/")
        assert flat.keys() == first.keys() and all(np.array_equal(flat[p], first[p]) for p in first)
    return loaded[0]


def _keras_files(model, folder):
    """The model's weights in each format Keras writes: legacy .h5 (keras.applications'
    downloads), Keras 3 .weights.h5, and .keras."""
    from keras.src.legacy.saving import legacy_h5_format

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "legacy.h5", folder / "model.weights.h5", folder / "model.keras"]
    with h5py.File(paths[0], "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    model.save_weights(paths[1])
    model.save(paths[2])
    return [str(p) for p in paths]


def test_keras_vgg16_equals_keras_from_each_file_format(tmp_path):
    model = _keras_model("VGG16", input_shape=(32, 32, 3), classes=10)
    images = np.random.default_rng(1).uniform(-120, 130, (2, 32, 32, 3)).astype(np.float32)
    expected = np.asarray(model(images))
    loaded = _load_each_format(model, tmp_path)
    assert loaded.preprocessing == {"normalization": "caffe", "image_size": 32}
    assert (loaded.module.depth, loaded.module.top) == (16, True)
    assert relative_error(loaded.module.apply(loaded.variables, images), expected) <= 1e-4


def test_a_keras_vgg16_top_built_for_a_non_square_input_loads_from_its_keras_file(tmp_path):
    """fc1 reads the flattened 2x1 grid of 64x48 inputs: the .keras file records that input
    (the .h5 files, which do not, name it in one line); images of another size are one line."""
    from tljax import inference
    from tljax.data import preprocess

    model = _keras_model("VGG16", input_shape=(64, 48, 3), classes=5)
    images = np.random.default_rng(1).uniform(-120, 130, (2, 64, 48, 3)).astype(np.float32)
    expected = model.predict(images, verbose=0)
    legacy, bare, keras_file = _keras_files(model, tmp_path)
    loaded = weights.load_model(keras_file)
    assert loaded.preprocessing == {"normalization": "caffe", "image_size": (64, 48)}
    assert relative_error(loaded.module.apply(loaded.variables, images), expected) <= 1e-4
    pipeline = preprocess.build(inference.eval_pp(loaded.preprocessing))
    assert pipeline(np.zeros((90, 70, 3), np.uint8), np.zeros(2, np.int64)).shape == (64, 48, 3)
    with pytest.raises(UserError, match=r"at 64x64 images: shape params: classifier/fc1/kernel "
                                        r"\(1024, 4096\) in the file vs \(2048, 4096\)"):
        weights.load_model(keras_file, image_shape=(64, 64, 3))
    for path in (legacy, bare):
        with pytest.raises(UserError, match="2-cell grid, not a square one.*load the .keras file"):
            weights.load_model(path)


@pytest.mark.parametrize("alpha,size", [(0.35, 32), (1.0, 33)])
def test_keras_mobilenet_v2_equals_keras_from_each_file_format(alpha, size, tmp_path):
    """Width multipliers; an odd input size exercises Keras' correct_pad on the stride-2
    depthwise convs; BatchNorm on running statistics with eps 1e-3."""
    model = _keras_model("MobileNetV2", input_shape=(size, size, 3), alpha=alpha, classes=10)
    images = np.random.default_rng(1).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
    expected = np.asarray(model(images, training=False))
    loaded = _load_each_format(model, tmp_path, image_shape=(size, size, 3))
    assert loaded.module.alpha == alpha and loaded.preprocessing["normalization"] == "value_range(-1,1)"
    assert relative_error(loaded.module.apply(loaded.variables, images), expected) <= 1e-4


def test_the_dogs_config_retrains_vggs_final_layers_from_the_keras_cache(tmp_path, monkeypatch):
    """configs/dogs.py (default keras:VGG16) with the weights in the Keras cache ($KERAS_HOME
    /models, as keras.applications leaves them): without the dataset one TFDS line; on mock
    data, last_k:1 trains the classifier block and a new 120-way head, the conv blocks stay
    bit-identical, and the run's preprocessing is Keras' caffe."""
    from flax import traverse_util
    from keras.src.legacy.saving import legacy_h5_format

    from tests.test_dataset_configs import _mock
    from tljax import config_lib, runs
    from tljax.weights import catalog, tljax_format

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    model = _keras_model("VGG16", input_shape=(32, 32, 3), classes=10)
    path = tmp_path / "keras" / "models" / "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
    path.parent.mkdir(parents=True)
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    assert catalog.resolve("keras:VGG16") == str(path)

    config = config_lib.load("configs/dogs.py")
    assert (config.model.init, config.freeze) == ("keras:VGG16", "last_k:1")
    with config.unlocked():
        config.data.data_dir = str(tmp_path / "tfds")
        config.data.image_size = 32
        config.data.pp_train = "resize(32)|flip_lr|init_norm"
        config.data.pp_eval = "resize(32)|init_norm"
        config.data.batch_size, config.data.eval_batch_size = 4, 6
        config.total_steps, config.checkpoint_every, config.log_every = 3, 3, 1
        config.optim.warmup_steps, config.export_weights = 1, True
    with pytest.raises(UserError, match="stanford_dogs"):
        runs.run(config, str(tmp_path / "offline"))
    with _mock():
        runs.run(config, str(tmp_path / "run"))
    exported = tljax_format.load(str(tmp_path / "run" / "model.safetensors"))
    assert exported.num_classes == 120 and exported.preprocessing["normalization"] == "caffe"
    start = traverse_util.flatten_dict(weights.read(str(path)).variables["params"], sep="/")
    end = traverse_util.flatten_dict(exported.variables["params"], sep="/")
    moved = {p for p in end if not p.startswith("head/") and not np.array_equal(start[p], end[p])}
    assert moved == {f"classifier/{fc}/{leaf}" for fc in ("fc1", "fc2") for leaf in ("kernel", "bias")}
    assert end["head/kernel"].shape == (4096, 120) and np.any(end["head/kernel"] != 0)


def test_keras_inception_v3_equals_keras_from_each_file_format(tmp_path):
    """Branching blocks: Keras lists (and Keras 3 numbers) the layers in its graph's
    topological order, not the order its code builds them; BatchNorm without gamma; "same"
    average pools that do not count the padding."""
    model = _keras_model("InceptionV3", input_shape=(75, 75, 3), classes=10)
    images = np.random.default_rng(1).uniform(-1, 1, (2, 75, 75, 3)).astype(np.float32)
    expected = np.asarray(model(images, training=False))
    loaded = _load_each_format(model, tmp_path, image_shape=(75, 75, 3))
    assert loaded.preprocessing == {"normalization": "value_range(-1,1)", "image_size": 299}
    assert relative_error(loaded.module.apply(loaded.variables, images), expected) <= 1e-4


def test_inception_v3_groups_cover_every_parameter_and_last_k_trains_mixed10():
    from flax import traverse_util

    from tljax import freezing

    module = models.build("inception_v3", {}, 5)
    shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), np.zeros((1, 75, 75, 3), np.float32)))
    paths = list(traverse_util.flatten_dict(shapes["params"], sep="/"))
    groups = models.groups(module)
    assert {models.group_of(p, groups) for p in paths} == {"stem", "head", *(f"mixed{i}" for i in range(11))}
    trainable = freezing.make_plan("last_k:1", groups, paths).phases[0].trainable_paths()
    assert {p.split("/")[0] for p in trainable} == {"mixed10", "head"}
    assert not any(p.endswith("bn/scale") for p in paths)  # Keras' conv2d_bn: scale=False
