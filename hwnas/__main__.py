"""``python -m hwnas`` runs the ``hwnas`` command; ``torchrun ... -m hwnas search ...`` needs this module."""
from hwnas.cli.main import main

main()
