"""The packaged hyperparameters as a Python config (``-conf sb3_reinflow.zoo.config``)."""

import yaml

from sb3_reinflow.zoo import hyperparams_path

hyperparams = yaml.safe_load(hyperparams_path().read_text())
