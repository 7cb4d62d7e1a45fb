"""Start-up cost of the offline default run: wall time and XLA compilations of

  (a) a default run with an empty compilation cache (its init recipe's weights already made),
  (b) the same run in a new workdir, the cache warm (the second run of a sweep),
  (c) a re-run of the finished run (b),
  (d) `tljax.cli.predict` on one image with the run (b), cache warm.

    python -m benchmarks.startup [--steps=100]

Each is a fresh process, timed from start to exit; compilations are counted from the log
line each command ends with (tljax/compilation.py). Prints a markdown table.
"""
import os
import re
import subprocess
import sys
import tempfile
import time

from absl import app, flags

flags.DEFINE_integer("steps", 100, "config total_steps (the default config has 100)")
FLAGS = flags.FLAGS

_STATS = re.compile(r"(\d+) XLA programs compiled, (\d+) loaded from the compilation cache "
                    r"\(([\d.]+)s\)")


def _timed(args, cache):
    env = dict(os.environ, TLJAX_COMPILATION_CACHE=cache, JAX_PLATFORMS="cpu")
    begin = time.monotonic()
    result = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env)
    wall = time.monotonic() - begin
    if result.returncode:
        sys.exit(f"{' '.join(args)} failed:\n{result.stderr[-3000:]}")
    found = _STATS.findall(result.stderr)
    compiled, loaded, seconds = found[-1] if found else ("0", "0", "0")
    return wall, int(compiled), int(loaded), float(seconds)


def _an_image(folder):
    import numpy as np
    from PIL import Image

    path = os.path.join(folder, "digit.png")
    Image.fromarray((np.arange(64).reshape(8, 8) * 4).astype(np.uint8)).save(path)
    return path


def main(argv):
    del argv
    root = tempfile.mkdtemp(prefix="tljax_startup_")
    cache = os.path.join(root, "xla")
    train = ["tljax.main", "--config=configs/digits.py", f"--config.total_steps={FLAGS.steps}"]
    rows = [("(a) default run, empty compilation cache",
             _timed(train + [f"--workdir={root}/a"], cache)),
            ("(b) the same run, new workdir, warm cache",
             _timed(train + [f"--workdir={root}/b"], cache)),
            ("(c) re-run of the finished run (b)",
             _timed(train + [f"--workdir={root}/b"], cache)),
            ("(d) predict one image with run (b), warm cache",
             _timed(["tljax.cli.predict", f"--model={root}/b", "--verbosity=1",
                     _an_image(root)], cache))]
    print(f"| command ({FLAGS.steps} steps, {os.cpu_count()} CPU cores) | wall s | XLA programs "
          f"compiled | loaded from cache | compile + load s |")
    print("|---|---:|---:|---:|---:|")
    for name, (wall, compiled, loaded, seconds) in rows:
        print(f"| {name} | {wall:.1f} | {compiled} | {loaded} | {seconds:.1f} |")


if __name__ == "__main__":
    app.run(main)
