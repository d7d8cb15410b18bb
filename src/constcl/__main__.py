"""Allow ``python -m constcl ...`` (needed by ``torchrun -m constcl``)."""

from constcl.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
