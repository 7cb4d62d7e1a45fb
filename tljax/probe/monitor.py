"""Few-shot monitoring during fine-tuning: every evaluation, the ridge few-shot accuracy of
the current features on another dataset (e.g. the source task), so a researcher sees
whether fine-tuning destroys general features, as big_vision's fewshot evaluator logs.

Config: fewshot.name (a TFDS name or folder:/path; "" = off), fewshot.train_split,
fewshot.test_split, fewshot.shots, fewshot.seeds; the run's eval preprocessing is used.
"""
import numpy as np
from absl import logging

from tljax import config_lib, data
from tljax.probe import classifiers, features


class FewShotMonitor:
    def __init__(self, config, data_cfg, module, par):
        fs = config.fewshot
        self._cfg = config_lib.copy(config).data
        with self._cfg.unlocked():
            self._cfg.update(name=fs.name, data_dir=data_cfg.data_dir, pp_eval=data_cfg.pp_eval,
                             train_split=fs.train_split, val_split="", test_split=fs.test_split,
                             few_shot_k=max(fs.shots), few_shot_val_k=0, few_shot_seed=0,
                             cache=True)
        self._shots, self._seeds, self._l2 = tuple(fs.shots), fs.seeds, fs.l2
        self._num_classes = data.num_classes(self._cfg)
        self._fn = features.feature_fn(module)
        self._par = par
        self._batch = config.data.eval_batch_size

    def __call__(self, state):
        """{"{k}shot": mean test accuracy over seeds} of ridge on the current features."""
        one = self._par.to_host(self._par.one_copy(state))
        variables = {"params": one.params, **({"batch_stats": one.batch_stats} if one.batch_stats else {})}
        sets = {which: features.extract(self._fn, variables, self._cfg, which, 0, self._batch,
                                        count_flops=False)[0]
                for which in ("train", "test")}
        table = classifiers.few_shot_ridge(sets["train"], sets["test"], self._num_classes, self._shots,
                                      self._seeds, self._l2)
        result = {f"{k}shot": float(np.mean(v)) for k, v in table.items()}
        logging.info("few-shot %s: %s", self._cfg.name,
                     "  ".join(f"{k} {v:.4f}" for k, v in result.items()))
        return result
