"""``python -m wireframe``: the same command as ``wireframe``."""

from wireframe.cli import main

if __name__ == "__main__":
    main()
