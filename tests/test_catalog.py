"""The checkpoint catalogue: offline, a missing checkpoint says where to put the file."""
import os
import urllib.error

import pytest

from tljax.errors import UserError
from tljax.weights import catalog


def test_offline_download_fails_with_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TLJAX_WEIGHTS_DIR", str(tmp_path))

    def offline(url, filename):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(catalog.urllib.request, "urlretrieve", offline)
    with pytest.raises(UserError, match=rf"put it at {tmp_path}/BiT-M-R50x1.npz"):
        catalog.resolve("catalog:BiT-M-R50x1")
    assert os.listdir(tmp_path) == []  # no half-written file left behind
    with pytest.raises(UserError, match="unknown catalogue checkpoint 'BiT-X'"):
        catalog.resolve("catalog:BiT-X")


def test_a_downloaded_checkpoint_resolves_to_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TLJAX_WEIGHTS_DIR", str(tmp_path))
    (tmp_path / "ViT-B_16.npz").write_bytes(b"x")
    assert catalog.resolve("catalog:ViT-B_16") == str(tmp_path / "ViT-B_16.npz")
    assert catalog.resolve("/some/file.npz") == "/some/file.npz"


def test_the_catalogue_command_lists_without_a_warning():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "tljax.cli.catalog"], capture_output=True,
                            text=True, check=True)
    assert "BiT-M-R50x1" in result.stdout and "Warning" not in result.stderr, result.stderr[-500:]
