"""The FGVC suite of visual prompt tuning (Jia et al. 2022, KMnP/vpt) and the PEFT papers that
follow it: CUB-200-2011, NABirds, Oxford Flowers, Stanford Dogs, Stanford Cars.

VPT's validation sets are its own random 10 % of each official train set (json lists shipped
with its data, README "Datasets preparation"); Flowers uses its official train / validation.
tljax uses the TFDS datasets and, where VPT uses its own list, the last 10 % of TFDS train in
TFDS order (train[:90%] / train[90%:]): the same sizes, not the same images. As in VPT
(train.py l.66-82: only vtab-* tasks train on trainval), the final stage trains on the same
train split, without its validation part, and reports the official test split. Facts and
sizes: docs/dev/suite_facts.md section 4.
"""
import dataclasses

SOURCE = "KMnP/vpt README (FGVC), its splits replaced by TFDS slices (tljax/experiments/fgvc.py)"


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    data_name: str      # data.name: the TFDS dataset
    num_classes: int
    train: str          # select stage: train -> val
    val: str
    final_train: str    # final stage: final_train -> test (VPT: the select train split)
    test: str
    note: str = ""      # how to get the data, where TFDS cannot


TASKS = {t.name: t for t in [
    Task("cub200", "caltech_birds2011", 200, "train[:90%]", "train[90%:]", "train[:90%]", "test"),
    # No TFDS builder: tljax/data/nabirds.py prepares it from the manual download.
    Task("nabirds", "nabirds", 555, "train[:90%]", "train[90%:]", "train[:90%]", "test",
         note="NABirds needs a registration at dl.allaboutbirds.org: unpack nabirds.tar.gz "
              "and pass --set=data.manual_dir=THAT_FOLDER (tljax prepares it on first use), or "
              "leave it out with --tasks (the FGVC mean is then marked incomplete)"),
    Task("flowers102", "oxford_flowers102", 102, "train", "validation", "train", "test"),
    Task("stanford_dogs", "stanford_dogs", 120, "train[:90%]", "train[90%:]", "train[:90%]", "test"),
    Task("stanford_cars", "cars196", 196, "train[:90%]", "train[90%:]", "train[:90%]", "test"),
]}
