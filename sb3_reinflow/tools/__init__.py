"""Command-line tools, each run as ``python -m sb3_reinflow.tools.<name>`` (``--help`` lists the options)."""
