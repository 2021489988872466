"""``python -m amos_autoseg`` runs the command line."""
from amos_autoseg.cli.main import console

console()
