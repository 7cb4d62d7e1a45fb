"""Published suite tables, transcribed with their source, backbone, protocol and the mean they
print (docs/dev/suite_facts.md). The suite report shows them beside a suite's own results,
marked published, with both mean conventions recomputed from the per-task numbers."""
import dataclasses


@dataclasses.dataclass(frozen=True)
class Table:
    source: str         # repository and file
    backbone: str
    protocol: str       # how the numbers were selected
    printed_mean: str   # which mean the source prints
    rows: dict          # method -> {"params_m", "printed_mean", "tasks": {task: accuracy %}}


TABLES = {}
