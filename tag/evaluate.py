"""Score a trained run on a CoNLL file with gold tags, as conlleval does.

    python -m tag.evaluate --run RUN_DIR --data FILE [--out PRED_FILE] [--decode viterbi|argmax]

prints precision / recall / F1 overall and per type, and writes `token gold pred` lines for the conlleval script,
for the file as it is (documents). It then scores the file's other two views (data/views.py): each sentence alone,
and each sentence alone without its final punctuation, and prints the three F1s side by side.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from data.conll import read_conll, write_conlleval
from data.decode import DECODERS
from data.metrics import conlleval_report
from data.schemes import SCHEMES
from data.views import VIEW_NAMES, once_per_view, views
from tag.run import load_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tag.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="run directory written by `python -m train`")
    parser.add_argument("--data", required=True, help="CoNLL file with gold tags")
    parser.add_argument("--scheme", choices=SCHEMES, default="auto", help="its tag scheme (default: auto)")
    parser.add_argument("--out", help="write `token gold pred` lines here (conlleval format)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", help="base checkpoint folder, if it moved since training")
    parser.add_argument("--decode", choices=DECODERS, help="how scores become tags (default: the run's setting)")
    parser.add_argument("--int8", action=argparse.BooleanOptionalAction,
                        help="int8 matmuls on a CPU with VNNI or AMX, as predict --int8 tags (tag/quantize.py); "
                             "default: off")
    args = parser.parse_args(argv)

    try:
        predictor = load_run(args.run, device=args.device, model=args.model, int8=args.int8)
        sentences = read_conll(args.data, args.scheme, predictor.labels)  # errors name the file and line
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.decode:
        predictor = dataclasses.replace(predictor, settings=dataclasses.replace(predictor.settings, decode=args.decode))
    if any(s.tags is None for s in sentences):
        print(f"error: {args.data} has no NER column to score against; use tag.predict to tag it", file=sys.stderr)
        return 2
    by_view = once_per_view(views(sentences), lambda view, view_sentences: predictor.tag(
        view_sentences, progress=f"{args.data}, {view}"))
    result = by_view["documents"]
    print(conlleval_report(result.scores))
    print("F1 by decoder: " + ", ".join(f"{d} {f1:.2f}" for d, f1 in result.f1_by_decoder.items()))
    print(f"linear layers: {'int8' if predictor.int8 else 'bf16' if predictor.bf16 else 'float32'}")
    print("F1 by view: " + ", ".join(f"{VIEW_NAMES[v]} {r.scores.f1:.2f}" for v, r in by_view.items()))
    if args.out:
        write_conlleval(args.out, sentences, result.tags)
        print(f"predictions written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
