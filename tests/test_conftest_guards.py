"""The test suite's own guards (tests/conftest.py): what CI relies on to be told the truth."""
import subprocess
import sys

from tests.conftest import ROOT


def test_a_skip_for_an_unexpected_reason_fails_the_session(tmp_path):
    """tests/conftest.py's guard: a broken import that skips a parity file fails the run; the
    skips it lists (timm, GPU-only) do not."""
    (tmp_path / "conftest.py").write_text(
        f"import sys\nsys.path.insert(0, {ROOT!r})\n"
        "from tests.conftest import pytest_sessionfinish  # noqa: F401\n")
    (tmp_path / "test_expected.py").write_text(
        "import pytest\n\ndef test_timm():\n    pytest.importorskip('timm_not_installed_here')\n"
        "    pytest.skip(\"could not import 'timm': no torchvision\")\n")

    def session(*files):
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p",
                               "no:cacheprovider", "-o", "addopts=", *files], cwd=tmp_path,
                              capture_output=True, text=True)

    assert session("test_expected.py").returncode != 0  # (its import skip is not the timm one)
    (tmp_path / "test_expected.py").write_text(
        "import pytest\n\ndef test_timm():\n    pytest.skip(\"could not import 'timm': no torchvision\")\n")
    assert session("test_expected.py").returncode == 0
    (tmp_path / "test_broken.py").write_text(
        "import pytest\ntransformers = pytest.importorskip('transformers_renamed')\n\n"
        "def test_parity():\n    pass\n")
    result = session("test_expected.py", "test_broken.py")
    assert result.returncode == 1, result.stdout[-800:]
    assert "1 tests skipped for a reason not in tests/conftest.py EXPECTED_SKIPS" in result.stdout
    assert "could not import 'transformers_renamed'" in result.stdout
