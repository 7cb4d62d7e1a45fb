"""Published suite tables, transcribed with their source, backbone, protocol and the mean they
print (docs/dev/suite_facts.md, which checks every printed mean). The suite report shows them
beside a suite's own results, marked published, with both mean conventions recomputed from the
per-task numbers."""
import dataclasses


@dataclasses.dataclass(frozen=True)
class Table:
    source: str         # repository and file
    backbone: str
    protocol: str       # how the numbers were selected
    printed_mean: str   # which mean the source prints
    rows: dict          # method -> {"params_m", "printed_mean", "tasks": {task: accuracy in %}}
    config: str = ""    # the tljax config that runs its recipe on its backbone ...
    unshared: str = ""  # ... and what of the source's recipe no tljax config can share
    # Rows another recipe produced (a table that prints another paper's rows): {method:
    # (the tljax config that runs that recipe, where the rows come from and how chosen)}.
    other_recipes: dict = dataclasses.field(default_factory=dict)

    def recipe_of(self, method):
        """The tljax config that runs the recipe behind the row `method`."""
        return self.other_recipes.get(method, (self.config, ""))[0]


# The config keys that make a recipe, compared between a suite's config and a table's.
RECIPE_KEYS = ("model.init", "data.image_size", "data.pp_train", "data.pp_eval",
               "data.batch_size", "total_steps", "optim.name", "optim.schedule",
               "optim.warmup_steps", "optim.decay_boundaries", "optim.clip_norm",
               "label_smoothing", "model.drop_path", "data.mixup_alpha")


def _rows(columns, printed):
    """{method: (params M, printed mean, accuracies in the printed column order)} -> rows."""
    return {method: {"params_m": params, "printed_mean": mean, "tasks": dict(zip(columns, acc))}
            for method, (params, mean, acc) in printed.items()}


_VPETL = "V-PETL Bench (synbol/Parameter-Efficient-Transfer-Learning-Benchmark) README.md"
_PROTOCOL = ("one seed; the best test accuracy over evaluations (ImageClassification/train/"
             "train_model_*.py), not chosen on validation")

# The printed column order (CIFAR-100 first), as tljax task names.
VTAB1K_COLUMNS = (
    "cifar100", "caltech101", "dtd", "flowers102", "pets", "svhn", "sun397", "camelyon",
    "eurosat", "resisc45", "retinopathy", "clevr_count", "clevr_distance", "dmlab",
    "kitti_distance", "dsprites_location", "dsprites_orientation", "smallnorb_azimuth",
    "smallnorb_elevation",
)
VTAB1K_VPETL = {  # README.md l.415-434: params (M), printed mean, 19 accuracies
    "Full fine-tuning": ( 85.8, 65.57, (68.9, 87.7, 64.3, 97.2, 86.9, 87.4, 38.8, 79.7, 95.7, 84.2, 73.9, 56.3, 58.6, 41.7, 65.5, 57.5, 46.7, 25.7, 29.1)),
    "Linear probing":   (  0.0, 52.94, (63.4, 85.0, 63.2, 97.0, 86.3, 36.6, 51.0, 78.5, 87.5, 68.6, 74.0, 34.3, 30.6, 33.2, 55.4, 12.5, 20.0,  9.6, 19.2)),
    "Adapter":          ( 0.16, 71.44, (69.2, 90.1, 68.0, 98.8, 89.9, 82.8, 54.3, 84.0, 94.9, 81.9, 75.5, 80.9, 65.3, 48.6, 78.3, 74.8, 48.5, 29.9, 41.6)),
    "VPT-Shallow":      ( 0.08, 64.85, (77.7, 86.9, 62.6, 97.5, 87.3, 74.5, 51.2, 78.2, 92.0, 75.6, 72.9, 50.5, 58.6, 40.5, 67.1, 68.7, 36.1, 20.2, 34.1)),
    "VPT-Deep":         ( 0.56, 69.43, (78.8, 90.8, 65.8, 98.0, 88.3, 78.1, 49.6, 81.8, 96.1, 83.4, 68.4, 68.5, 60.0, 46.5, 72.8, 73.6, 47.9, 32.9, 37.8)),
    "BitFit":           (  0.1, 62.05, (72.8, 87.0, 59.2, 97.5, 85.3, 59.9, 51.4, 78.7, 91.6, 72.9, 69.8, 61.5, 55.6, 32.4, 55.9, 66.6, 40.0, 15.7, 25.1)),
    "LoRA":             ( 0.29, 72.25, (67.1, 91.4, 69.4, 98.8, 90.4, 85.3, 54.0, 84.9, 95.3, 84.4, 73.6, 82.9, 69.2, 49.8, 78.5, 75.7, 47.1, 31.0, 44.0)),
    "AdaptFormer":      ( 0.16, 72.32, (70.8, 91.2, 70.5, 99.1, 90.9, 86.6, 54.8, 83.0, 95.8, 84.4, 76.3, 81.9, 64.3, 49.3, 80.3, 76.3, 45.7, 31.7, 41.1)),
    "SSF":              ( 0.21, 73.10, (69.0, 92.6, 75.1, 99.4, 91.8, 90.2, 52.9, 87.4, 95.9, 87.4, 75.5, 75.9, 62.3, 53.3, 80.6, 77.3, 54.9, 29.5, 37.9)),
    "NOAH":             ( 0.43, 73.25, (69.6, 92.7, 70.2, 99.1, 90.4, 86.1, 53.7, 84.4, 95.4, 83.9, 75.8, 82.8, 68.9, 49.9, 81.7, 81.8, 48.3, 32.8, 44.2)),
    "SCT":              ( 0.11, 73.59, (75.3, 91.6, 72.2, 99.2, 91.1, 91.2, 55.0, 85.0, 96.1, 86.3, 76.2, 81.5, 65.1, 51.7, 80.2, 75.4, 46.2, 33.2, 45.7)),
    "FacT":             ( 0.07, 73.23, (70.6, 90.6, 70.8, 99.1, 90.7, 88.6, 54.1, 84.8, 96.2, 84.5, 75.7, 82.6, 68.2, 49.8, 80.7, 80.8, 47.4, 33.2, 43.0)),
    "RepAdapter":       ( 0.22, 73.84, (72.4, 91.6, 71.0, 99.2, 91.4, 90.7, 55.1, 85.3, 95.9, 84.6, 75.9, 82.3, 68.0, 50.4, 79.9, 80.4, 49.2, 38.6, 41.0)),
    "Hydra":            ( 0.28, 74.21, (72.7, 91.3, 72.0, 99.2, 91.4, 90.7, 55.5, 85.8, 96.0, 86.1, 75.9, 83.2, 68.2, 50.9, 82.3, 80.3, 50.8, 34.5, 43.1)),
    "LST":              ( 2.38, 71.70, (59.5, 91.5, 69.0, 99.2, 89.9, 79.5, 54.6, 86.9, 95.9, 85.3, 74.1, 81.8, 61.8, 52.2, 81.0, 71.7, 49.5, 33.7, 45.2)),
    "DTL":              ( 0.04, 74.58, (69.6, 94.8, 71.3, 99.3, 91.3, 83.3, 56.2, 87.1, 96.2, 86.1, 75.0, 82.8, 64.2, 48.8, 81.9, 93.9, 53.9, 34.2, 47.1)),
    "HST":              ( 0.78, 75.99, (76.7, 94.1, 74.8, 99.6, 91.1, 91.2, 52.3, 87.1, 96.3, 88.6, 76.5, 85.4, 63.7, 52.9, 81.7, 87.2, 56.8, 35.8, 52.1)),
    "GPS":              ( 0.22, 75.18, (81.1, 94.2, 75.8, 99.4, 91.7, 91.6, 52.4, 87.9, 96.2, 86.5, 76.5, 79.9, 62.6, 55.0, 82.4, 84.0, 55.4, 29.7, 46.1)),
    "LAST":             ( 0.66, 74.15, (66.7, 93.4, 76.1, 99.6, 89.8, 86.1, 54.3, 86.2, 96.3, 86.8, 75.4, 81.9, 65.9, 49.4, 82.6, 87.9, 46.7, 32.3, 51.5)),
    "SNF":              ( 0.25, 74.10, (84.0, 94.0, 72.7, 99.3, 91.3, 90.3, 54.9, 87.2, 97.3, 85.5, 74.5, 82.3, 63.8, 49.8, 82.5, 75.8, 49.2, 31.4, 42.1)),
}
FGVC_COLUMNS = ("cub200", "nabirds", "flowers102", "stanford_dogs", "stanford_cars")
FGVC_VPETL = {  # README.md l.389-403
    "Full fine-tuning": ( 85.8, 88.54, (87.3, 82.7, 98.8, 89.4, 84.5)),
    "Linear probing":   (  0.0, 79.32, (85.3, 75.9, 97.9, 86.2, 51.3)),
    "Adapter":          ( 0.41, 85.66, (87.1, 84.3, 98.5, 89.8, 68.6)),
    "AdaptFormer":      ( 0.46, 88.48, (88.4, 84.7, 99.2, 88.2, 81.9)),
    "Prefix Tuning":    ( 0.36, 86.38, (87.5, 82.0, 98.0, 74.2, 90.2)),
    "U-Tuning":         ( 0.36, 90.00, (89.2, 85.4, 99.2, 84.1, 92.1)),
    "BitFit":           (  0.1, 88.02, (87.7, 85.2, 99.2, 86.5, 81.5)),
    "VPT-Shallow":      ( 0.25, 84.66, (86.7, 78.8, 98.4, 90.7, 68.7)),
    "VPT-Deep":         ( 0.85, 89.10, (88.5, 84.2, 99.0, 90.2, 83.6)),
    "SSF":              ( 0.39, 90.72, (89.5, 85.7, 99.6, 89.6, 89.2)),
    "LoRA":             ( 0.77, 84.78, (85.6, 79.8, 98.9, 87.6, 72.0)),
    "GPS":              ( 0.66, 91.78, (89.9, 86.7, 99.7, 92.2, 90.4)),
    "HST":              ( 0.78, 90.46, (89.2, 85.8, 99.6, 89.5, 88.2)),
    "LAST":             ( 0.66, 89.50, (88.5, 84.4, 99.7, 86.0, 88.9)),
    "SNF":              ( 0.25, 90.74, (90.2, 87.4, 99.7, 89.5, 86.9)),
}

_SELECTION = "the best test accuracy over evaluations (tljax chooses on validation)"
# VPT's own rows, which V-PETL Bench prints as they are (docs/dev/suite_facts.md §2a): KMnP/vpt's
# recipe per transfer type, lr and weight decay chosen on validation (val200 for VTAB), test at
# the last epoch averaged over 5 seeds (tune_vtab.py l.3, l.105).
_VPT_ROWS = ("VPT's own rows (Jia et al. 2022, KMnP/vpt), printed as they are by V-PETL Bench: "
             "lr and weight decay chosen on val200, then the mean of 5 seeds' test accuracy "
             "at the last epoch (tune_vtab.py), as tljax chooses; VPT-Deep with "
             "--schedules=vpt:tokens=N,deep=1 (VPT tunes N per task)")
_VPT_FGVC_ROWS = ("VPT's rows (Jia et al. 2022) as recalled, printed by V-PETL Bench (unverified: "
                  "docs/dev/suite_facts.md §4); VPT chooses lr and weight decay on its own "
                  "validation lists; VPT-Deep with --schedules=vpt:tokens=N,deep=1")


def _vpt_rows(config, note):
    """{method: (config, note)} of the rows VPT produced, each with its transfer type's solver."""
    return {"Full fine-tuning": (f"{config}finetune", note),
            "Linear probing": (f"{config}linear", note),
            "VPT-Shallow": (f"{config}prompt", note), "VPT-Deep": (f"{config}prompt", note)}

TABLES = {
    "vtab1k": Table(_VPETL + " l.413-434", "ViT-B/16 ImageNet-21k", _PROTOCOL,
                    "flat mean over the 19 tasks", _rows(VTAB1K_COLUMNS, VTAB1K_VPETL),
                    config="configs/vtab.py:vpetl",
                    unshared="augmentation and label smoothing switched per task, lr and weight "
                             "decay tuned per method and task, a per-epoch cosine to 1e-5, "
                             + _SELECTION,
                    other_recipes=_vpt_rows("configs/vtab.py:vpt-", _VPT_ROWS)),
    "fgvc": Table(_VPETL + " l.387-403", "ViT-B/16 ImageNet-21k", _PROTOCOL,
                  "flat mean over the 5 datasets", _rows(FGVC_COLUMNS, FGVC_VPETL),
                  config="configs/fgvc.py:vpetl",
                  unshared="VPT's own validation lists, lr and weight decay per method and "
                           "task, a per-epoch cosine, " + _SELECTION,
                  other_recipes=_vpt_rows("configs/fgvc.py:", _VPT_FGVC_ROWS)),
}
