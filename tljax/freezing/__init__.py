"""Which parameters train, when, at what lr, and which parameter-efficient modules are added:
the spec grammar (spec.py), freezing strategies (strategies.py), PEFT methods as spec
components (methods.py) and the Plan a run follows (plan.py)."""
from tljax.freezing.methods import METHODS  # noqa: F401
from tljax.freezing.plan import (Label, Phase, Plan, compiled_phases, make_plan,  # noqa: F401
                                 summary_rows, trainable_fraction)
from tljax.freezing.spec import PROBE, Part, Spec, from_config, label_of, parse, split_list  # noqa: F401,E501
from tljax.freezing.strategies import (STRATEGIES, Restart, freezeout_times,  # noqa: F401
                                       layer_decay_depths)
