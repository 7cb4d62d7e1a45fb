"""tljax: transfer learning of pretrained vision and language backbones in JAX/Flax."""
from setuptools import find_packages, setup

setup(
    name="tljax",
    version="0.1.0",
    description="Transfer learning with freezing schedules for JAX/Flax vision and language backbones",
    packages=find_packages(include=["tljax", "tljax.*"]),
    entry_points={"console_scripts": ["tljax = tljax.cli.commands:main"]},
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.10,<0.11",  # CPU jaxlib; GPU/TPU: the cuda12 / tpu extras below
        "flax>=0.12,<0.13",
        "optax>=0.2.8,<0.3",
        "orbax-checkpoint>=0.12,<0.13",
        "tensorflow-cpu>=2.20,<2.22",
        "tensorflow-datasets>=4.9.10,<4.10",
        "ml-collections>=1.1,<1.2",
        "absl-py>=2.1",
        "importlib_resources",  # tfds imports it but does not declare it
        "numpy>=2.0,<2.5",
        "scikit-learn>=1.5",
        "scipy>=1.10",  # t-intervals in the sweep report
        "safetensors>=0.4",
        "matplotlib>=3.8",
        "tensorboard>=2.20",
        "clu>=0.0.12",  # metric writers (TensorBoard scalars + hparams)
        "etils[epath]",
        "huggingface_hub>=1.0",  # hf: and timm: weight names (tljax/weights/hub.py)
        "optuna>=4.0",  # tljax/experiments/search.py: TPE sampler, successive halving, shared storage
        "tokenizers>=0.20",  # text: the checkpoints' own tokenizer.json (tljax/data/tokens.py)
    ],
    extras_require={
        # torch is pinned to the CPU wheel: an unpinned torch pulls CUDA packages.
        "test": ["pytest>=8", "pytest-xdist>=3.5", "torch==2.13.0", "transformers>=5.0,<6",
                 # a real PostgreSQL server for the search's two-worker test, from a wheel
                 "pgserver>=0.1.4", "psycopg[binary]>=3.1"],
        # tljax search --storage=postgresql://...: psycopg 3, SQLAlchemy 2's default driver
        "postgres": ["psycopg[binary]>=3.1"],
        "cuda12": ["jax[cuda12]>=0.10,<0.11"],  # NVIDIA GPUs: pip install -e ".[cuda12]"
        "tpu": ["jax[tpu]>=0.10,<0.11"],
    },
)
