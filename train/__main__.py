"""python -m train: fine-tune a NER tagger (see `python -m train --help`).

Before its first step a run reads everything it is given: the settings, the data, the base checkpoint, a checkpoint
to resume. A ValueError or OSError there is about one of them, and is one line (`error: ...`, naming the flag or the
file and line) with exit code 2; any other error, or one after the first step, is a bug and keeps its traceback.
"""

import sys

from train.config import parse_args
from train.loop import train


def main(argv: list[str]) -> int:
    stepped = False

    def on_step(step: int) -> None:
        nonlocal stepped
        stepped = True

    try:
        train(parse_args(argv), on_step=on_step)
    except (ValueError, OSError) as e:
        if stepped:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
