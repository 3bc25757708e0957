"""Real, offline data: the VADER sentiment lexicon as a polarity task (chapter 00, §5).

`vaderSentiment` ships `vader_lexicon.txt`: one token per line, with the mean of ten
human valence ratings (each an integer in [-4, 4]), their standard deviation and the ten
ratings themselves, tab-separated:

    token <TAB> mean <TAB> std <TAB> [r1, r2, ..., r10]

From it we build a binary polarity task (label 1 = positive mean) and keep the mean as a
regression target. Nothing is downloaded: the file is read from the installed package.

Three decisions, each backed by a number the chapter prints:

* **Near-neutral tokens are dropped** (`DEFAULT_THRESHOLD`, eq. 0.10). The label of a token
  is the sign of its mean rating; it is only trustworthy if most raters agree with that
  sign. `agreement_by_level` measures, for each printed |mean| (a multiple of 0.1), the
  average fraction of the ten raters whose own rating has the label's sign. Below
  |mean| = 0.6 that fraction is under one half (about a third for |mean| < 0.5): the label
  says "positive" while most raters said "neutral" or "negative". `choose_threshold`
  returns the smallest level from which every level keeps a majority; on the shipped file
  that is 0.6, and a test ties `DEFAULT_THRESHOLD` to it.
* **Tokens that share a stem stay on one side of the split** (`group_key`, eq. 0.11). The
  lexicon holds inflections of one word (love, loved, lovely, loves). A per-token split
  puts "loved" in training and "lovely" in test, and a frozen-encoder probe then scores
  higher for the wrong reason. A token's group is its first `KEY_CHARS` = 4 lowercase
  characters, or its first 3 when those 3 are themselves a token of the lexicon (so "bad",
  "badly", "badass" stay together), and whole groups are split. `related_across` checks
  the result: no test token is a prefix or an extension (3+ characters) of a training one.
* **Duplicates** (e.g. "d:" at -2.9 and again at +1.2, most likely "D:" and "d:" before the
  file was lowercased) are resolved the way VADER itself does: the later line wins
  (`SentimentIntensityAnalyzer.make_lex_dict` builds a dict).

The shipped file has a few errata, reported by `audit` rather than silently fixed: one
line whose printed mean is 0.1 away from the mean of its ratings (allowed explicitly in
`KNOWN_MEAN_ERRATA`; any other mismatch is a corrupt line), and six printed standard
deviations that are not the population standard deviation of the ratings (four are sample
standard deviations, one is a misplaced decimal point). We never use the printed std.
"""

from __future__ import annotations

import bisect
import functools
import importlib.resources
import math
import numbers
import pathlib
from dataclasses import dataclass

import numpy as np

N_RATINGS = 10  # each VADER token was rated by ten people
RATING_MIN, RATING_MAX = -4, 4
DEFAULT_THRESHOLD = 0.6  # smallest |mean| where a majority of raters share the label's sign
DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)
KEY_CHARS = 4  # group tokens by their first four lowercase characters (or three, see group_key)

# (token, printed mean, sum of ratings) of lines in the shipped file whose printed mean
# is not the mean of their ratings. Only these exact lines are accepted.
KNOWN_MEAN_ERRATA = frozenset({("lmfao", 2.5, 24)})


@dataclass(frozen=True)
class Entry:
    """One line of the lexicon. `mean` and `std` are as printed; `ratings` are the raw ten."""

    token: str
    mean: float
    std: float
    ratings: tuple[int, ...]
    line: int

    @property
    def rating_mean(self) -> float:
        """Mean of the ten ratings, sum/10 (exact to one decimal). The regression target."""
        return sum(self.ratings) / N_RATINGS


@dataclass(frozen=True)
class Split:
    """One side of the split: tokens, labels (1 = positive, int64), mean rating (float32)."""

    tokens: list[str]
    labels: np.ndarray
    mean: np.ndarray

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True)
class Task:
    train: Split
    val: Split
    test: Split
    threshold: float
    seed: int
    fractions: tuple[float, float, float]
    roots: frozenset[str]  # the stem roots `group_key` used (see `stem_roots`)
    n_duplicates: int  # lines dropped because a later line has the same token
    n_neutral: int  # tokens dropped because |mean| < threshold


# ---------------------------------------------------------------------------- parsing

def default_path() -> pathlib.Path:
    """Where the installed vaderSentiment package keeps its lexicon (no network)."""
    try:
        root = importlib.resources.files("vaderSentiment")
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            "the VADER lexicon comes from the 'vaderSentiment' package, which is not "
            "installed; install it (see pyproject.toml)") from e
    return pathlib.Path(str(root / "vader_lexicon.txt"))


def _corrupt(path, line_no: int, why: str, text: str) -> ValueError:
    return ValueError(f"{path}: line {line_no} is corrupt: {why}: {text[:80]!r}")


def _number(field: str, what: str, path, line_no: int, text: str) -> float:
    try:
        x = float(field)
    except ValueError:
        raise _corrupt(path, line_no, f"{what} {field!r} is not a number", text) from None
    if not math.isfinite(x):
        raise _corrupt(path, line_no, f"{what} {field!r} is not finite", text)
    return x


def _ratings(field: str, path, line_no: int, text: str) -> tuple[int, ...]:
    if not (field.startswith("[") and field.endswith("]")):
        raise _corrupt(path, line_no, "ratings must be a bracketed list", text)
    parts = [p.strip() for p in field[1:-1].split(",")]
    if len(parts) != N_RATINGS:
        raise _corrupt(path, line_no, f"expected {N_RATINGS} ratings, found {len(parts)}", text)
    try:
        ratings = tuple(int(p) for p in parts)
    except ValueError:
        raise _corrupt(path, line_no, "ratings must be integers", text) from None
    if any(not RATING_MIN <= r <= RATING_MAX for r in ratings):
        raise _corrupt(path, line_no, f"ratings must lie in [{RATING_MIN}, {RATING_MAX}]", text)
    return ratings


def parse_line(text: str, line_no: int, path="<lexicon>") -> Entry:
    """Parse and validate one lexicon line; ValueError names the line and the problem."""
    fields = text.split("\t")
    if len(fields) != 4:
        raise _corrupt(path, line_no, f"expected 4 tab-separated fields, found {len(fields)}", text)
    token, mean_s, std_s, ratings_s = fields
    if not token or token != token.strip():
        raise _corrupt(path, line_no, "token is empty or has surrounding whitespace", text)
    mean = _number(mean_s, "mean", path, line_no, text)
    std = _number(std_s, "std", path, line_no, text)
    ratings = _ratings(ratings_s.strip(), path, line_no, text)
    if not RATING_MIN <= mean <= RATING_MAX:
        raise _corrupt(path, line_no, f"mean {mean} outside [{RATING_MIN}, {RATING_MAX}]", text)
    if not 0.0 <= std <= RATING_MAX - RATING_MIN:
        raise _corrupt(path, line_no, f"std {std} outside [0, {RATING_MAX - RATING_MIN}]", text)
    # Ten integer ratings have a mean of exactly sum/10: the printed one-decimal mean must
    # be that number, unless this exact line is a documented erratum of the shipped file.
    total = sum(ratings)
    if abs(mean * N_RATINGS - total) > 1e-6 and (token, mean, total) not in KNOWN_MEAN_ERRATA:
        raise _corrupt(path, line_no,
                       f"printed mean {mean_s} is not the mean of the ratings ({total / N_RATINGS})",
                       text)
    return Entry(token, mean, std, ratings, line_no)


def load_vader(path: str | pathlib.Path | None = None) -> list[Entry]:
    """All lines of the lexicon, in file order (duplicates kept). Empty lines are skipped.

    `path` defaults to the file shipped in `vaderSentiment`; pass another path to test the
    parser. A corrupt line raises ValueError naming its line number.
    """
    path = default_path() if path is None else pathlib.Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not a lexicon file")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a UTF-8 byte-order mark is not part of a token
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from None
    entries = [parse_line(line.rstrip("\r"), i, path)
               for i, line in enumerate(text.split("\n"), start=1) if line.strip()]
    if not entries:
        raise ValueError(f"{path}: no lexicon entries found")
    return entries


def audit(entries: list[Entry]) -> dict:
    """Errata of a lexicon: duplicated tokens, mean and std that disagree with the ratings."""
    seen: dict[str, int] = {}
    for e in entries:
        seen[e.token] = seen.get(e.token, 0) + 1
    pop_std = [float(np.std(e.ratings)) for e in entries]
    return {
        "lines": len(entries),
        "unique_tokens": len(seen),
        "duplicated_tokens": sorted(t for t, c in seen.items() if c > 1),
        "mean_mismatch": [e.line for e in entries if abs(e.mean - e.rating_mean) > 1e-6],
        # the std is printed with up to 5 decimals, sometimes truncated: allow one unit
        "std_mismatch": [e.line for e, s in zip(entries, pop_std) if abs(e.std - s) > 1e-5 + 1e-9],
    }


# ---------------------------------------------------------------------- the threshold

def rater_agreement(entries: list[Entry]) -> np.ndarray:
    """Per entry, the fraction of raters whose rating has the sign of the mean (eq. 0.9).

    A rating of 0 agrees with neither sign, so it counts as disagreement.
    """
    if not entries:
        raise ValueError("no entries given")
    r = np.array([e.ratings for e in entries], dtype=np.int64)
    sign = np.sign(r.sum(axis=1))
    return (np.sign(r) == sign[:, None]).mean(axis=1)


def agreement_by_level(entries: list[Entry]):
    """(levels, counts, mean agreement) for each distinct |mean| = |sum|/10 in the data."""
    abs_sum = np.abs(np.array([sum(e.ratings) for e in entries], dtype=np.int64))
    agree = rater_agreement(entries)
    steps = np.unique(abs_sum)
    counts = np.array([(abs_sum == s).sum() for s in steps], dtype=np.int64)
    means = np.array([agree[abs_sum == s].mean() for s in steps])
    return steps / N_RATINGS, counts, means


def choose_threshold(entries: list[Entry], min_agreement: float = 0.5) -> float:
    """Smallest |mean| level from which every level's mean agreement exceeds `min_agreement`
    (eq. 0.10)."""
    if not 0.0 <= min_agreement < 1.0:
        raise ValueError(f"min_agreement must lie in [0, 1), got {min_agreement}")
    levels, _, agree = agreement_by_level(entries)
    ok = agree > min_agreement
    bad = np.flatnonzero(~ok)
    first = 0 if bad.size == 0 else bad[-1] + 1
    if first >= len(levels):
        raise ValueError(f"no |mean| level has mean agreement above {min_agreement}")
    return round(float(levels[first]), 1)


# ----------------------------------------------------------------------- the split

def stem_roots(tokens) -> frozenset[str]:
    """The lowercased tokens of exactly KEY_CHARS - 1 characters ("bad", "fun", "win")."""
    return frozenset(t.lower() for t in tokens if len(t) == KEY_CHARS - 1)


@functools.lru_cache(maxsize=1)
def _shipped_roots() -> frozenset[str]:
    return stem_roots(e.token for e in load_vader())


def group_key(token: str, roots: frozenset[str] | None = None) -> str:
    """Stem key of a token (eq. 0.11): its first KEY_CHARS = 4 lowercase characters, except
    that a token starting with a 3-character root that is itself in the lexicon joins
    that root ("loved", "lovely" -> "love"; "bad", "badly", "badass" -> "bad").

    The 4-character prefix alone would leave inflections of 3-letter words ("win"/"wins",
    "sad"/"sadly") on both sides of the split. Tokens sharing 4 characters always share a
    key, because they share the first 3 too. `roots` defaults to the shipped lexicon's
    (`stem_roots`).
    """
    if not isinstance(token, str):
        raise TypeError(f"token must be a str, got {type(token).__name__}")
    if not token:
        raise ValueError("token must be a non-empty str")
    roots = _shipped_roots() if roots is None else roots
    t = token.lower()
    return t[:KEY_CHARS - 1] if t[:KEY_CHARS - 1] in roots else t[:KEY_CHARS]


def _check_threshold(threshold) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"threshold must be a real number, got {type(threshold).__name__}")
    t = float(threshold)
    if not math.isfinite(t) or not 0.0 < t <= RATING_MAX:
        raise ValueError(f"threshold must be a finite |mean| in (0, {RATING_MAX}], got {threshold}")
    return t


def _check_fractions(fractions) -> tuple[float, float, float]:
    try:
        f = tuple(float(x) for x in fractions)
    except (TypeError, ValueError):
        raise TypeError(f"fractions must be three numbers, got {fractions!r}") from None
    if len(f) != 3 or not all(math.isfinite(x) and x > 0 for x in f) or abs(sum(f) - 1) > 1e-9:
        raise ValueError(f"fractions must be three positive numbers summing to 1, got {fractions!r}")
    return f


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return int(seed)


def _make_split(tokens: list[str], target: dict[str, float]) -> Split:
    mean = np.array([target[t] for t in tokens], dtype=np.float32)
    return Split(tokens, (mean > 0).astype(np.int64), mean)


def _assign(groups: dict[str, list[str]], keys: list[str], fractions, rng) -> list[list[str]]:
    """Shuffle whole groups, then fill train, val, test in that order up to `fractions`."""
    n = sum(len(groups[k]) for k in keys)
    bounds = np.cumsum(fractions)[:2] * n  # token counts at which train and val are full
    sides: list[list[str]] = [[], [], []]
    done = 0
    for i in rng.permutation(len(keys)):
        side = int(np.searchsorted(bounds, done, side="right"))  # 0, 1 or 2
        sides[side] += groups[keys[i]]
        done += len(groups[keys[i]])
    return sides


def polarity_task(threshold: float = DEFAULT_THRESHOLD, seed: int = 0,
                  fractions=DEFAULT_FRACTIONS, path: str | pathlib.Path | None = None) -> Task:
    """The VADER polarity task: |mean| >= threshold, grouped, stratified, seeded split.

    Tokens are grouped by `group_key`; a group joins the positive stratum when most of its
    tokens are positive. Within each stratum, the sorted group keys are shuffled by
    `np.random.default_rng(seed)` (positive stratum first) and whole groups fill train,
    then val, then test up to `fractions` of that stratum's tokens. No group crosses a
    split; each split's class balance stays close to the whole task's; sorting first makes
    the result independent of file order, Python's hash seed and the machine.
    """
    threshold = _check_threshold(threshold)
    seed = _check_seed(seed)
    fractions = _check_fractions(fractions)
    entries = load_vader(path)
    target = {e.token: e.rating_mean for e in entries}  # later lines win, as in VADER
    kept = sorted(t for t, m in target.items() if abs(m) >= threshold - 1e-6)  # float32 thresholds too
    if len({target[t] > 0 for t in kept}) < 2:
        raise ValueError(f"threshold {threshold} leaves {len(kept)} tokens and fewer than two classes")
    roots = stem_roots(target)
    groups: dict[str, list[str]] = {}
    for t in kept:
        groups.setdefault(group_key(t, roots), []).append(t)
    positive = {k: 2 * sum(target[t] > 0 for t in g) >= len(g) for k, g in groups.items()}
    rng = np.random.default_rng(seed)
    sides: list[list[str]] = [[], [], []]
    for stratum in (True, False):
        keys = sorted(k for k in groups if positive[k] == stratum)
        for side, part in zip(sides, _assign(groups, keys, fractions, rng)):
            side += part
    for name, s in zip(("train", "val", "test"), sides):
        if len({target[t] > 0 for t in s}) < 2:
            raise ValueError(f"the {name} split has {len(s)} tokens and fewer than two classes; "
                             "lower the threshold or change the fractions")
    train, val, test = (_make_split(sorted(s), target) for s in sides)
    return Task(train, val, test, threshold, seed, fractions, roots,
                n_duplicates=len(entries) - len(target), n_neutral=len(target) - len(kept))


def task_summary(task: Task) -> dict:
    """Sizes and class balance of each split (plain ints and floats)."""
    out = {"threshold": task.threshold, "seed": task.seed,
           "dropped_duplicates": task.n_duplicates, "dropped_neutral": task.n_neutral}
    for name in ("train", "val", "test"):
        s: Split = getattr(task, name)
        pos = int(s.labels.sum())
        out[name] = {"n": len(s), "positive": pos, "negative": len(s) - pos,
                     "positive_fraction": pos / len(s),
                     "groups": len({group_key(t, task.roots) for t in s.tokens})}
    out["n"] = sum(out[k]["n"] for k in ("train", "val", "test"))
    return out


def related_across(a: Split, b: Split, min_len: int = KEY_CHARS - 1) -> list[tuple[str, str]]:
    """Pairs (x in a, y in b), x != y, where one lowercased token is a prefix of the other
    and the shorter has at least `min_len` characters: the leakage `group_key` prevents.
    """
    bs = sorted({t.lower() for t in b.tokens})
    b_set = set(bs)
    pairs = []
    for x in sorted({t.lower() for t in a.tokens}):
        if len(x) < min_len:
            continue
        i = bisect.bisect_left(bs, x)  # tokens in b that extend x sort right after x
        while i < len(bs) and bs[i].startswith(x):
            if bs[i] != x:
                pairs.append((x, bs[i]))
            i += 1
        pairs += [(x, x[:k]) for k in range(min_len, len(x)) if x[:k] in b_set]
    return pairs


def subsample(split: Split, n: int, seed: int = 0) -> Split:
    """n items of `split` with (as nearly as possible) its class balance, seeded.

    round(n * positive fraction) positives, the rest negatives, each drawn without
    replacement by `np.random.default_rng(seed)`; the result keeps the split's order.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if not 2 <= n <= len(split):
        raise ValueError(f"n must lie in [2, {len(split)}] for this split, got {n}")
    seed = _check_seed(seed)
    pos = np.flatnonzero(split.labels == 1)
    neg = np.flatnonzero(split.labels == 0)
    n_pos = min(max(round(n * len(pos) / len(split)), 1), len(pos), n - 1)  # keep both classes
    n_neg = n - n_pos
    if n_neg > len(neg):
        n_neg, n_pos = len(neg), n - len(neg)
    rng = np.random.default_rng(seed)
    idx = np.sort(np.concatenate([rng.choice(pos, n_pos, replace=False),
                                  rng.choice(neg, n_neg, replace=False)]))
    return Split([split.tokens[i] for i in idx], split.labels[idx].copy(), split.mean[idx].copy())
