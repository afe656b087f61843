"""The SB3-test runner's offline parts: unpacking the sdist's tests and choosing the PPO test files."""

import io
import tarfile

from conftest import load_script


def add_file(tar: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_unpacks_only_tests_and_pytest_settings(tmp_path):
    script = load_script("run_sb3_tests")
    archive = tmp_path / "stable_baselines3-9.9.9.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        add_file(tar, "stable_baselines3-9.9.9/pyproject.toml", "[tool.pytest.ini_options]\n")
        add_file(tar, "stable_baselines3-9.9.9/stable_baselines3/__init__.py", "")
        add_file(tar, "stable_baselines3-9.9.9/tests/test_a.py", "from stable_baselines3 import A2C, PPO\n")
        add_file(tar, "stable_baselines3-9.9.9/tests/test_b.py", "from stable_baselines3 import SAC\n# PPO in a comment\n")
        add_file(tar, "stable_baselines3-9.9.9/tests/../../escape.py", "")
    destination = tmp_path / "out"
    destination.mkdir()
    script._unpack_tests(archive, destination)
    unpacked = sorted(str(path.relative_to(destination)) for path in destination.rglob("*") if path.is_file())
    # the sdist's package is not unpacked, so SB3's tests import the installed stable_baselines3
    assert unpacked == ["pyproject.toml", "tests/test_a.py", "tests/test_b.py"]
    assert script.ppo_test_files(destination / "tests") == ["test_a.py"]
