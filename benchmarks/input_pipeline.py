"""Train-input throughput: JPEG decode + preprocessing ops + batching, images/s on this machine.

    python -m benchmarks.input_pipeline   # the GPU suite's batch, with RandAugment
    python -m benchmarks.input_pipeline --pp="inception_crop(224)|flip_lr|value_range(-1,1)"

Uses flowers-like JPEGs (scikit-learn's two 427x640 sample photos, randomly cropped to
500x~375-667 and re-encoded at quality 90) held in memory, so it measures decoding and
preprocessing, not disk.
"""
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

from tljax.data import preprocess

flags.DEFINE_string("pp", "inception_crop(224)|flip_lr|randaug(2,10)|value_range(-1,1)",
                    "train preprocessing")
flags.DEFINE_integer("batch", 128, "batch size (benchmarks/gpu_suite.sh's)")
flags.DEFINE_integer("images", 3000, "images to time (after 2 warm-up batches)")
flags.DEFINE_integer("threads", 0, "tf.data private threadpool size (0: AUTOTUNE default)")
FLAGS = flags.FLAGS


def flower_like_jpegs(count=64, seed=0):
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = load_sample_images().images
    jpegs = []
    for i in range(count):
        photo = photos[i % len(photos)]
        h = int(rng.integers(300, 427))
        w = int(rng.integers(375, 640))
        top, left = rng.integers(0, 427 - h + 1), rng.integers(0, 640 - w + 1)
        jpegs.append(tf.io.encode_jpeg(photo[top:top + h, left:left + w], quality=90).numpy())
    return jpegs


def measure(pp, batch, images, threads=0):
    pp_fn = preprocess.build(pp)
    ds = tf.data.Dataset.from_tensor_slices(flower_like_jpegs()).repeat().enumerate()
    ds = ds.map(lambda i, jpeg: pp_fn(tf.io.decode_jpeg(jpeg, channels=3), tf.stack([tf.constant(0, tf.int64), i])),
                num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch, drop_remainder=True).prefetch(2)
    if threads:
        options = tf.data.Options()
        options.threading.private_threadpool_size = threads
        ds = ds.with_options(options)
    it = iter(ds)
    for _ in range(2):
        next(it)
    start = time.perf_counter()
    n = 0
    while n < images:
        next(it).numpy()
        n += batch
    return n / (time.perf_counter() - start)


def main(argv):
    del argv
    rate = measure(FLAGS.pp, FLAGS.batch, FLAGS.images, FLAGS.threads)
    import os

    cores = len(os.sched_getaffinity(0))
    print(f"{rate:.0f} images/s, {rate / cores:.0f} per core  ({FLAGS.pp}, batch {FLAGS.batch}, "
          f"{cores} CPU cores)")


if __name__ == "__main__":
    app.run(main)
