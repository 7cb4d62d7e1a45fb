"""The digits builder, few-shot selection and the eval pipeline's exact counting."""
import numpy as np
import pytest

from tljax import data
from tljax.data import k_shot
from tljax.errors import UserError


def _labels(batches):
    return np.concatenate([b["label"][b["mask"] > 0] for b in batches])


def test_builder_splits_are_the_source_and_target_digits(data_dir):
    from tljax.data import digits
    from sklearn.datasets import load_digits

    builder = digits.TljaxDigits(data_dir=data_dir)
    splits = builder.info.splits
    sk = load_digits().target
    assert splits["source_train"].num_examples + splits["source_test"].num_examples == np.sum(sk < 5)
    assert splits["source_test"].num_examples == int(np.ceil(np.sum(sk < 5) / 5))
    assert splits["target"].num_examples == np.sum(sk >= 5) == 896
    target = list(builder.as_dataset(split="target").as_numpy_iterator())
    assert {int(e["digit"]) for e in target} == {5, 6, 7, 8, 9}
    assert all(int(e["label"]) == int(e["digit"]) - 5 for e in target)
    assert target[0]["image"].shape == (8, 8, 1) and max(e["image"].max() for e in target) == 255


def test_few_shot_indices_are_k_per_class_and_deterministic_per_seed():
    labels = np.repeat(np.arange(5), 30)
    a = k_shot.few_shot_indices(labels, 5, seed=3)
    assert np.array_equal(a, k_shot.few_shot_indices(labels, 5, seed=3))
    assert not np.array_equal(a, k_shot.few_shot_indices(labels, 5, seed=4))
    assert np.array_equal(np.bincount(labels[a]), [5] * 5)
    with pytest.raises(UserError, match="only 30 examples"):
        k_shot.few_shot_indices(labels, 31, seed=0)


def test_few_shot_train_validation_and_test_partition_the_target_split(make_config):
    cfg = make_config().data
    parts = {which: data.pipeline.examples(cfg, which, seed=7)
             for which in ("train", "validation", "test")}
    counts = {which: n for which, (_, n) in parts.items()}
    assert counts["train"] == 25 and counts["validation"] == 25
    assert sum(counts.values()) == 896
    labels = np.concatenate([np.repeat(np.arange(5), 40)])
    masks = data.pipeline.few_shot_masks(cfg, labels, seed=7)
    assert not np.any(masks["train"] & masks["validation"])
    assert np.all(masks["train"] ^ masks["validation"] ^ masks["test"])  # each example once
    for which in ("train", "validation"):
        labels_seen = [int(e["label"]) for e in parts[which][0].as_numpy_iterator()]
        assert np.array_equal(np.bincount(labels_seen), [5] * 5), which
    first, _ = data.pipeline.examples(cfg, "validation", seed=7)
    again, _ = data.pipeline.examples(cfg, "validation", seed=7)
    assert [e["image"].tobytes() for e in again.as_numpy_iterator()] == \
        [e["image"].tobytes() for e in first.as_numpy_iterator()]


def test_a_validation_split_equal_to_the_train_split_is_refused(make_config):
    cfg = make_config().data
    with cfg.unlocked():
        cfg.few_shot_k, cfg.train_split, cfg.val_split = 0, "source_train", "source_train"
    with pytest.raises(UserError, match="is also the train split"):
        data.pipeline.examples(cfg, "validation", seed=0)


@pytest.mark.parametrize("batch_size,processes", [(7, 1), (64, 1), (1000, 1), (12, 3)])
def test_eval_counts_every_example_exactly_once(make_config, batch_size, processes):
    cfg = make_config().data
    seen = []
    for p in range(processes):
        batches, count = data.eval_batches(cfg, seed=0, global_batch=batch_size,
                                           process_index=p, process_count=processes)
        batches = list(batches)
        assert all(b["image"].shape[0] == batch_size // processes for b in batches)
        seen.append(batches)
    # Every process yields the same number of batches (collectives need it).
    assert len({len(b) for b in seen}) == 1
    images = np.concatenate([b["image"][b["mask"] > 0] for bs in seen for b in bs])
    assert len(images) == count == 896 - 25 - 25  # the target split less train and validation shots
    full, _ = data.eval_batches(cfg, seed=0, global_batch=846)
    expected = sorted(x.tobytes() for b in full for x in b["image"])
    assert sorted(x.tobytes() for x in images) == expected


def test_train_batches_resume_mid_stream_and_split_across_processes(make_config):
    cfg = make_config().data
    stream = data.train_batches(cfg, seed=1, global_batch=8)
    it = iter(stream)
    batches = [next(it) for _ in range(6)]
    resumed = iter(data.train_batches(cfg, seed=1, global_batch=8, start_step=4))
    for expected in batches[4:]:
        got = next(resumed)
        assert np.array_equal(got["image"], expected["image"])
        assert np.array_equal(got["label"], expected["label"])
    halves = [iter(data.train_batches(cfg, seed=1, global_batch=8, process_index=p, process_count=2))
              for p in range(2)]
    for expected in batches[:3]:
        parts = [next(h) for h in halves]
        assert np.array_equal(np.concatenate([p["image"] for p in parts]), expected["image"])


def test_unprepared_dataset_is_a_clear_error(make_config, tmp_path):
    cfg = make_config().data
    with cfg.unlocked():
        cfg.name, cfg.data_dir = "mnist", str(tmp_path)
    with pytest.raises(UserError, match="'mnist' is not prepared.*download_and_prepare"):
        data.pipeline.examples(cfg, "train", seed=0)


def test_the_train_stream_runs_untuned_so_a_run_ends_when_it_is_done(make_config):
    """Deleting a tf.data iterator waits for its autotuner thread, which sleeps ever longer
    between rounds: a run abandoning its endless train stream ended up to 22 s late (measured,
    tljax/data/pipeline.py _train_options). Up to 16 cores (untuned parallelism is then every
    core) the stream is built untuned, and still streams."""
    import os

    stream = data.train_batches(make_config().data, seed=1, global_batch=8)
    untuned = len(os.sched_getaffinity(0)) <= 16
    assert stream._ds.options().autotune.enabled is not untuned  # tfds.as_numpy's dataset
    assert next(iter(stream))["image"].shape == (8, 8, 8, 3)
