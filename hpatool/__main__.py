"""``python -m hpatool`` (also what ``torchrun -m hpatool`` runs)."""

from hpatool.cli import main

if __name__ == "__main__":
    main()
