"""``python -m vheat``: the vheat command line (train, eval, throughput, flops)."""
from vheat.cli.main import main

if __name__ == "__main__":
    main()
