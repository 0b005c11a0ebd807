"""python -m train: fine-tune a NER tagger (see `python -m train --help`)."""

import sys

from train.config import parse_args
from train.loop import train

if __name__ == "__main__":
    train(parse_args(sys.argv[1:]))
