"""Build script: setup.cfg holds the metadata; this file only adds the rl_zoo3 start-up hook (a .pth file)."""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

ZOO_HOOK_PTH = "sb3_reinflow_zoo.pth"


class BuildPyWithZooHook(build_py):
    """Also install ``sb3_reinflow_zoo.pth`` at the root of site-packages, for ``pip install .`` and ``pip install -e .``."""

    def run(self) -> None:
        super().run()
        # In editable mode, setuptools packs what lands in install_lib (the unpacked wheel) next to its own .pth.
        target_dir = self.get_finalized_command("install").install_lib if self.editable_mode else self.build_lib
        self.copy_file(ZOO_HOOK_PTH, os.path.join(target_dir, ZOO_HOOK_PTH), preserve_mode=False)


setup(cmdclass={"build_py": BuildPyWithZooHook})
