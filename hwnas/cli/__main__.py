"""``python -m hwnas.cli`` runs the ``hwnas`` command (handy without the console script)."""
from hwnas.cli.main import main

main()
