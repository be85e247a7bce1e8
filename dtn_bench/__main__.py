"""``python -m dtn_bench`` (and ``torchrun -m dtn_bench``) runs the CLI."""

from dtn_bench.cli import main

if __name__ == "__main__":
    main()
