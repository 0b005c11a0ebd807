"""Score a trained run on a CoNLL file with gold tags, as conlleval does.

    python -m tag.evaluate --run RUN_DIR --data FILE [--out PRED_FILE] [--html PAGE] [--decode viterbi|argmax]

prints precision / recall / F1 overall and per type, and writes `token gold pred` lines for the conlleval script,
for the file as it is (documents). It then scores the file's other two views (data/views.py): each sentence alone,
and each sentence alone without its final punctuation, and prints the three F1s side by side. `--html` writes the
documents view as a page for error analysis (tag/html.py): gold against predicted entities sentence by sentence,
the words joined by single spaces, misses and false alarms marked, each entity with the probability the tagger gave
its span.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from data.conll import Sentence, read_conll, write_conlleval
from data.decode import DECODERS
from data.metrics import conlleval_report
from data.schemes import SCHEMES
from data.views import VIEW_NAMES, once_per_view, views
from model.files import atomic_file, replaceable
from predictor.predictor import Tagged
from tag.html import Comparison, gold_vs_predicted_page
from tag.run import load_run
from tag.tagger import Prepared, scored_entities


def comparisons(sentences: Sequence[Sentence], tagged: Tagged, labels: Sequence[str], source: str
                ) -> list[Comparison]:
    """Each sentence's gold and predicted entities, as the API gives them for its words (tag_words), both scored
    by the label distributions the predicted tags come from."""
    found = []
    for sentence, tags, log_probs in zip(sentences, tagged.tags, tagged.log_probs):
        item = Prepared.from_words(sentence.words)
        gold, predicted = (scored_entities(item, t, log_probs, labels) for t in (sentence.tags, tags))
        found.append(Comparison(f"{source}:{sentence.line}", item.text, gold, predicted))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tag.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="run directory written by `python -m train`")
    parser.add_argument("--data", required=True, help="CoNLL file with gold tags")
    parser.add_argument("--scheme", choices=SCHEMES, default="auto", help="its tag scheme (default: auto)")
    parser.add_argument("--out", help="write `token gold pred` lines here (conlleval format)")
    parser.add_argument("--html", help="write gold against predicted entities, sentence by sentence, to this HTML "
                                       "file")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", help="base checkpoint folder, if it moved since training")
    parser.add_argument("--decode", choices=DECODERS, help="how scores become tags (default: the run's setting)")
    parser.add_argument("--int8", action=argparse.BooleanOptionalAction,
                        help="int8 matmuls on a CPU with VNNI or AMX, as predict --int8 tags (tag/quantize.py); "
                             "default: off")
    args = parser.parse_args(argv)
    if args.html and not replaceable(args.html):
        parser.error(f"--html {args.html}: not a regular file, which --html replaces once the page is written whole")

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
    if args.html:
        page = gold_vs_predicted_page(comparisons(sentences, result, predictor.labels.labels, args.data),
                                      predictor.labels.types, title=f"{args.data}: gold against {args.run}")
        try:
            with atomic_file(args.html) as tmp:
                tmp.write_text(page, encoding="utf-8")
        except OSError as e:
            print(f"error: --html {args.html}: {e}", file=sys.stderr)
            return 2
        print(f"gold against predicted entities written to {args.html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
