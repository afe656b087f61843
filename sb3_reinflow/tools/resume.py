"""
Resume an interrupted rl_zoo3 ``reinflow_ppo`` run where its checkpoint left it::

    python -m sb3_reinflow.tools.resume logs/reinflow_ppo/Hopper-v4_1

runs the run's own command line again (from the folder it was started in) with ``-i <run>/resume/model.zip``, which
the zoo plugin continues as the same run (see :mod:`sb3_reinflow.zoo.resume`). Runs of ``ReinFlowPPO.learn`` resume
in Python with :func:`sb3_reinflow.common.reinflow.resume.load_resume`.
"""

import argparse
import os
import shlex
import sys
from pathlib import Path

TRAINED_AGENT_FLAGS = ("-i", "--trained-agent")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sb3_reinflow.tools.resume",
        description="Continue an interrupted rl_zoo3 reinflow_ppo run from its resume checkpoint (<run>/resume/).",
    )
    parser.add_argument("run_folder", help="the run's log folder (e.g. logs/reinflow_ppo/Hopper-v4_1) or its resume/")
    parser.add_argument(
        "--print-command", action="store_true", help="print the command that resumes the run instead of running it"
    )
    return parser


def resume_command(run_folder: str | Path) -> tuple[str, list[str]]:
    """
    :param run_folder: a zoo run folder (or its ``resume/``)
    :return: the folder to run in and the ``rl_zoo3.train`` arguments that resume the run
    """
    from sb3_reinflow.common.reinflow.resume_state import MODEL_FILE, read_progress

    folder, progress = read_progress(run_folder)
    if "zoo" not in progress:
        raise SystemExit(
            f"{folder} was written by ReinFlowPPO.learn, not by rl_zoo3: resume it in Python with "
            "sb3_reinflow.common.reinflow.resume.load_resume(ReinFlowPPO, folder, env) (see docs/reliability.md)"
        )
    args, kept = progress["zoo"]["argv"], []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in TRAINED_AGENT_FLAGS:
            skip = True
        elif not arg.startswith("--trained-agent="):
            kept.append(arg)
    return progress["zoo"]["cwd"], [*kept, "-i", str((folder / MODEL_FILE).resolve())]


def main(argv: list[str] | None = None) -> None:
    options = make_parser().parse_args(argv)
    cwd, args = resume_command(options.run_folder)
    if options.print_command:
        print(f"cd {shlex.quote(cwd)} && python -m sb3_reinflow.zoo.train {shlex.join(args)}")
        return
    os.chdir(cwd)  # the run's relative paths (-f, --tensorboard-log, -conf) are those of the folder it started in
    sys.argv = ["sb3_reinflow.zoo.train", *args]
    from sb3_reinflow.zoo.train import main as train

    train()


if __name__ == "__main__":
    main()
