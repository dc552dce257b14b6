"""The newcomer's end-to-end job on the embedded synthetic data.

    python jobs/quickstart.py [--config FILE] [key=value ...]   (default: the packaged quickstart.yaml)
    ray job submit --working-dir . -- python jobs/quickstart.py
"""

from bridgerec.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["quickstart", *__import__("sys").argv[1:]]))
