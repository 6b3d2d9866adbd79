"""``python -m flagstone`` runs the command-line interface."""

from flagstone.cli.main import main

if __name__ == "__main__":
    main()
