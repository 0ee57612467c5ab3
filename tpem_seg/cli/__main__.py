"""``python -m tpem_seg.cli`` (and ``torchrun -m tpem_seg.cli``): the same as the ``tpem-seg`` script."""

from tpem_seg.cli import main

if __name__ == "__main__":
    main()
