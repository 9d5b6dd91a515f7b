"""Generated pseudo-English for the charrnn tests: no third-party text in the repository."""

import numpy as np

WORDS = (
    "the of and to in is was that for on with as by at from his her they we you it not "
    "but which have had this were are be one all their there been when who will would "
    "king queen lord love night day heart death blood time good sweet fair"
).split()


def pseudo_english(n_words: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    out, sentence = [], []
    for _ in range(n_words):
        w = WORDS[rng.integers(len(WORDS))]
        sentence.append(w.capitalize() if not sentence else w)
        if rng.random() < 0.12:
            out.append(" ".join(sentence) + (". " if rng.random() < 0.7 else ",\n"))
            sentence = []
    out.append(" ".join(sentence) + ".\n")
    return "".join(out)
