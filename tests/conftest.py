"""Shared test setup."""

import torch as th

# The test networks are tiny: one thread is faster than several competing for shared cores.
th.set_num_threads(1)
