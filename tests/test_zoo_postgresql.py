"""
Tuning across machines: two ``rl_zoo3.train -optimize`` workers share one Optuna study on a real PostgreSQL
server, started by the test itself (the ``pgserver`` package, from the ``tests`` extra).
"""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

pgserver = pytest.importorskip("pgserver", reason="pip install pgserver (tests extra) to start a PostgreSQL server")
pytest.importorskip("psycopg", reason="pip install 'psycopg[binary]' (tests extra): optuna's PostgreSQL driver")
optuna = pytest.importorskip("optuna")

STUDY = "reinflow-pendulum"
TINY_CONF = {
    "Pendulum-v1": {
        "policy": "MlpPolicy",
        "n_timesteps": 32,
        "n_envs": 1,
        "n_steps": 32,
        "batch_size": 32,
        "n_epochs": 1,
        "env_wrapper": [{"sb3_reinflow.common.wrappers.ActionChunkWrapper": {"horizon": 4}}],
    }
}


@pytest.fixture(scope="module")
def postgresql_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh PostgreSQL server for this module, reached through a unix socket; stopped and deleted afterwards."""
    # pgserver gives pg_ctl 10 s to start the server, too little on a busy CI machine
    patch = pytest.MonkeyPatch()
    pg_ctl = getattr(pgserver.postgres_server, "pg_ctl", None)
    if pg_ctl is not None:
        patch.setattr(pgserver.postgres_server, "pg_ctl", lambda *args, **kwargs: pg_ctl(*args, **{**kwargs, "timeout": 120}))
    try:
        server = pgserver.get_server(tmp_path_factory.mktemp("postgresql") / "data", cleanup_mode="delete")
    finally:
        patch.undo()
    try:
        # postgresql+psycopg: the psycopg 3 driver whatever SQLAlchemy's default for postgresql:// is
        yield server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        server.cleanup()


def _worker(folder: Path, conf: Path, storage: str, seed: int) -> subprocess.Popen:
    """One tuning worker, as it would run on its own machine: its own log folder, the shared study."""
    folder.mkdir()
    args = (
        f"-m rl_zoo3.train --algo reinflow_ppo --env Pendulum-v1 -conf {conf} -f logs --seed {seed} -optimize "
        f"--n-trials 1 --n-jobs 1 --sampler random --pruner none --n-evaluations 1 --eval-episodes 1 -n 32 "
        f"--no-optim-plots --study-name {STUDY}"
    ).split()
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, *args, "--storage", storage], cwd=folder, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def test_two_workers_share_one_study(tmp_path: Path, postgresql_url: str) -> None:
    conf = tmp_path / "tiny.yml"
    conf.write_text(yaml.safe_dump(TINY_CONF))
    # create the study once, as `optuna create-study` does before the workers start (docs/zoo.md)
    optuna.create_study(storage=postgresql_url, study_name=STUDY, direction="maximize")
    workers = [_worker(tmp_path / f"machine{i}", conf, postgresql_url, seed=i) for i in range(2)]
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-3000:]
    study = optuna.load_study(study_name=STUDY, storage=postgresql_url)
    assert [trial.state for trial in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    # each worker ran one of the two trials: "Trial 0 finished" in one log, "Trial 1 finished" in the other
    finished = [{n for n in (0, 1) if f"Trial {n} finished" in output} for output in outputs]
    assert sorted(map(sorted, finished)) == [[0], [1]], outputs
    assert all("min_noise_std" in trial.params for trial in study.trials)
