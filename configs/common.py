"""Defaults shared by every config: `base()` lives in the package (tljax/defaults.py), so the
library never imports configs/; config files keep importing it from here."""
from tljax.defaults import base  # noqa: F401
