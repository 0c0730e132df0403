"""Caption metrics as the COCO caption evaluation computes them: BLEU-4 and CIDEr-D.

Both score candidate captions against each image's reference captions over the whole
corpus, so they take every image at once (under DDP: the gathered strings of all ranks).

Tokenisation (:func:`caption_tokens`): lowercase, then words of letters/digits, with a
clitic (``'s``, ``'t``) split off as its own token and all other punctuation dropped.
This stands in for coco-caption's Stanford PTB tokenizer followed by its removal of
punctuation tokens; the two agree on plain captions, and differ only on rarer forms
(PTB splits "don't" into "do n't", we into "don 't").
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

Ngram = tuple[str, ...]
MAX_N = 4
CIDER_SIGMA = 6.0  # σ of CIDEr-D's Gaussian length penalty, in words
_WORDS = re.compile(r"'?[a-z0-9]+")


def caption_tokens(text: str) -> list[str]:
    """``"A dog's ball."`` → ``["a", "dog", "'s", "ball"]``."""
    return _WORDS.findall(text.lower())


def ngram_counts(words: Sequence[str], max_n: int = MAX_N) -> Counter[Ngram]:
    """Every n-gram of ``words`` for n = 1..max_n, with its count."""
    return Counter(
        tuple(words[i : i + n]) for n in range(1, max_n + 1) for i in range(len(words) - n + 1)
    )


def bleu(candidates: Sequence[str], references: Sequence[Sequence[str]], n: int = MAX_N) -> float:
    """Corpus BLEU-n (Papineni et al. 2002) as coco-caption computes it.

    Clipped n-gram matches and candidate n-gram counts are summed over the corpus
    before the precisions are taken; the brevity penalty exp(1 − r/c) applies when the
    total candidate length c is below r, the sum over images of the reference length
    closest to the candidate's (the shorter one on a tie). coco-caption's smoothing
    (1e-15 added to matches, 1e-9 to counts) is kept, so a corpus with no 4-gram match
    scores about 1e-4 rather than exactly 0.
    """
    matches, totals = [0] * n, [0] * n
    candidate_length = reference_length = 0
    for candidate, refs in zip(candidates, references, strict=True):
        words = caption_tokens(candidate)
        ref_words = [caption_tokens(r) for r in refs]
        counts = ngram_counts(words, n)
        most_in_a_reference: Counter[Ngram] = Counter()
        for ref in ref_words:
            most_in_a_reference |= ngram_counts(ref, n)  # max count over the references
        for gram, count in counts.items():
            matches[len(gram) - 1] += min(count, most_in_a_reference[gram])
        for k in range(n):
            totals[k] += max(len(words) - k, 0)
        candidate_length += len(words)
        reference_length += min((abs(len(r) - len(words)), len(r)) for r in ref_words)[1]
    precisions = [(m + 1e-15) / (t + 1e-9) for m, t in zip(matches, totals, strict=True)]
    score = math.prod(precisions) ** (1 / n)
    ratio = (candidate_length + 1e-15) / (reference_length + 1e-9)
    return score * math.exp(1 - 1 / ratio) if ratio < 1 else score


def cider_d(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus CIDEr-D (Vedantam et al. 2015) as coco-caption computes it.

    Each caption is a TF-IDF vector of its n-grams per n = 1..4, the IDF being
    log(#images / #images whose references contain the n-gram), from the references
    of this corpus. Per image and n: the cosine between the candidate's and each
    reference's vector, with the candidate's weights clipped at the reference's
    (no reward for repeating an n-gram), times exp(−δ²/2σ²) for a length difference
    δ (coco-caption measures lengths in bigrams, i.e. words − 1), averaged over the
    references; then averaged over n, ×10, and over images. Papers print it ×100.
    """
    ref_counts = [[ngram_counts(caption_tokens(r)) for r in refs] for refs in references]
    document_frequency: Counter[Ngram] = Counter()
    for refs in ref_counts:
        document_frequency.update(set().union(*refs))
    log_images = math.log(len(ref_counts))

    def tf_idf(counts: Counter[Ngram]) -> tuple[list[dict[Ngram, float]], list[float], int]:
        vectors: list[dict[Ngram, float]] = [{} for _ in range(MAX_N)]
        for gram, count in counts.items():
            idf = log_images - math.log(max(1.0, document_frequency[gram]))
            vectors[len(gram) - 1][gram] = count * idf
        norms = [math.sqrt(sum(w * w for w in v.values())) for v in vectors]
        bigrams = sum(count for gram, count in counts.items() if len(gram) == 2)
        return vectors, norms, bigrams

    scores = []
    for candidate, refs in zip(candidates, ref_counts, strict=True):
        cand, cand_norms, cand_length = tf_idf(ngram_counts(caption_tokens(candidate)))
        total = 0.0
        for ref_ngrams in refs:
            ref, ref_norms, ref_length = tf_idf(ref_ngrams)
            penalty = math.exp(-((cand_length - ref_length) ** 2) / (2 * CIDER_SIGMA**2))
            for k in range(MAX_N):
                dot = sum(
                    min(w, ref[k].get(g, 0.0)) * ref[k].get(g, 0.0) for g, w in cand[k].items()
                )
                if cand_norms[k] and ref_norms[k]:
                    dot /= cand_norms[k] * ref_norms[k]
                total += dot * penalty / MAX_N
        scores.append(10.0 * total / len(refs))
    return sum(scores) / len(scores)
