"""Launcher support: flags and one-line errors (cli), what the launchers print (console),
and run-directory locks (locks)."""
