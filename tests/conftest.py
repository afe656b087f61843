"""Shared test settings."""

import torch as th

# Tiny networks: one thread is as fast and avoids oversubscribing small CI machines.
th.set_num_threads(1)
