"""One module per CLI subcommand; see caffessd/cli.py.

May import: anything below (commands are the top layer); heavy libraries and the
feature a command runs stay inside the command function, so `caffessd --help` stays fast.
"""
