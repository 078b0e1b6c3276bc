"""Command groups of the CLI; each module has ``add(subparsers, common)`` and stays import-light."""

COMMANDS = ["run", "inspect", "evaluate", "embed", "viz", "predict", "export", "data", "augment", "tune", "completion", "schema", "new_plugin"]
