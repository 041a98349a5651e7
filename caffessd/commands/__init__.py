"""One module per CLI subcommand; see caffessd/cli.py."""
