"""How readable a sample is: the share of its words that are words of the corpus.

    orchestrator sample JOB --length 2000 --seed 1 | python benchmarks/readable.py builtin:python-docs
    python benchmarks/readable.py CORPUS SAMPLE.txt

A word is a run of two or more letters (case kept, as the corpus writes it); the figure is the
share of the sample's words, counted with repeats, that occur in the corpus. Uniform random
letters score near 0, the corpus itself 1. The README's first command states this figure for
the sample its job ends with.
"""

from __future__ import annotations

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from charrnn.data import read_corpus  # noqa: E402
from charrnn.errors import CharRNNError  # noqa: E402

WORD = re.compile(r"[A-Za-z]{2,}")


def share_of_words(sample: str, corpus: str) -> tuple[float, int]:
    """(share of the sample's words found in the corpus, number of words in the sample)."""
    known = set(WORD.findall(corpus))
    words = WORD.findall(sample)
    if not words:
        return 0.0, 0
    return sum(w in known for w in words) / len(words), len(words)


def main() -> None:
    if len(sys.argv) not in (2, 3) or sys.argv[1] in ("-h", "--help"):
        sys.exit(__doc__)
    try:
        corpus = read_corpus(sys.argv[1])
        with open(sys.argv[2] if len(sys.argv) == 3 else 0, encoding="utf-8") as f:
            sample = f.read()
    except (CharRNNError, OSError, UnicodeDecodeError) as e:
        sys.exit(f"readable.py: {e}")
    share, n = share_of_words(sample, corpus)
    print(f"{share:.1%} of {n} sampled words are words of the corpus")


if __name__ == "__main__":
    main()
