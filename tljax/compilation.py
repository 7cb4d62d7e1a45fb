"""XLA compilations: JAX's persistent compilation cache, so the runs of a sweep with the same
shapes and every re-run load their executables instead of compiling them, and a count of the
compilations a run still makes (logged at its end, so a regression is visible).

The cache is JAX's own (`jax_compilation_cache_dir`): it keys each executable on the
program's StableHLO, the compile options, the XLA flags, the backend and the jaxlib version
(jax/_src/cache_key.py), so a changed model, batch, config or JAX version misses it and
compiles afresh.
"""
import dataclasses
import os

from tljax import paths

ENV = "TLJAX_COMPILATION_CACHE"  # a folder, or "off"; read when compilation_cache is "auto"
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # jax/_src/dispatch.py
_HIT_EVENT = "/jax/compilation_cache/cache_hits"               # jax/_src/compiler.py


def cache_dir(setting="auto"):
    """The cache folder a `compilation_cache` setting means, or None for off: "auto" is
    $TLJAX_COMPILATION_CACHE, else <tljax cache>/xla; "off" or "" is off; else a folder."""
    if setting == "auto":
        setting = os.environ.get(ENV, os.path.join(paths.cache_root(), "xla"))
    if setting in ("", "off"):
        return None
    return os.path.abspath(os.path.expanduser(setting))


def enable_cache(setting="auto"):
    """Points JAX's persistent cache at `cache_dir(setting)` (no-op when off, or when the
    user set JAX's own jax_compilation_cache_dir). JAX decides whether to use a cache at a
    process's first compilation: the commands call this before any (runs.run first thing)."""
    import jax

    _listen()
    folder = cache_dir(setting)
    if folder is None or jax.config.jax_compilation_cache_dir:
        return
    jax.config.update("jax_compilation_cache_dir", folder)
    # Every executable, not only those over JAX's default 1 s: a short run's many small
    # programs are most of its compile time.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


@dataclasses.dataclass
class Stats:
    """Backend compilations (cache loads included), their seconds, and cache hits."""
    programs: int = 0
    seconds: float = 0.0
    cache_hits: int = 0

    @property
    def compiled(self):
        """Programs XLA compiled (not loaded from the cache)."""
        return self.programs - self.cache_hits

    def since(self, earlier):
        return Stats(self.programs - earlier.programs, self.seconds - earlier.seconds,
                     self.cache_hits - earlier.cache_hits)

    def __str__(self):
        return (f"{self.compiled} XLA programs compiled, {self.cache_hits} loaded from the "
                f"compilation cache ({self.seconds:.1f}s)")


_TOTAL = Stats()
_listening = False


def _listen():
    global _listening
    if _listening:
        return
    from jax import monitoring

    def on_duration(event, seconds, **_):
        if event == _COMPILE_EVENT:
            _TOTAL.programs += 1
            _TOTAL.seconds += seconds

    def on_event(event, **_):
        if event == _HIT_EVENT:
            _TOTAL.cache_hits += 1

    monitoring.register_event_duration_secs_listener(on_duration)
    monitoring.register_event_listener(on_event)
    _listening = True


def stats():
    """The process's totals so far (a copy); `stats().since(before)` counts a stretch."""
    _listen()
    return dataclasses.replace(_TOTAL)
