"""HallusionBench aAcc / fAcc / qAcc (×100) from per-question correctness, per flavor.

Each question belongs to a figure and to a *question* asked across the figures of its set:

* ``aAcc`` — accuracy over all questions;
* ``fAcc`` — a figure counts only if every question on it is answered correctly;
* ``qAcc`` — a question counts only if it is answered correctly on every figure it is asked about.

Where the references differ (item keys: ``category`` VD/VS, ``subcategory``, ``set_id``, ``figure_id``,
``question_id``, ``correct`` bool, and ``l2_category`` for VLMEvalKit):

=============  ===========================================================================================
official       tianyi-lab/HallusionBench ``utils.py``: ``get_eval_all`` (aAcc), ``get_eval_fig`` (fAcc; figures
               keyed by category, subcategory, set_id, figure_id; VS questions with figure_id 0 — asked without
               a figure — are left out), ``get_eval_pair_all`` (qAcc; keyed by category, subcategory, set_id,
               question_id). The authors judge correctness with GPT-4; the caller supplies a rule instead and
               ``assign_correctness`` counts an *uncertain* answer to a figure-less VS question as correct.
lmms-eval      ``tasks/hallusion_bench/evaluate_hb.py hb_aggregation_result_intern`` (its rule-based variant):
               the same keys, no figure left out.
vlmevalkit     ``vlmeval/dataset/utils/yorn.py Hallusion_rating``: figures keyed by ``l2-category``, set_id,
               figure_id and questions by ``l2-category``, set_id, question_id (ids from the TSV ``index``).
=============  ===========================================================================================
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable

import numpy as np

from evals.flavors import OFFICIAL, VLMEVALKIT, check_flavor

METRICS = ("aAcc", "fAcc", "qAcc")


#: the counts :func:`hallusion` is a function of (summed over any split of the items that keeps each figure's and
#: each question's items together): questions right, questions, figures all right, figures, questions right on every
#: figure, questions asked
COUNTS = ("right", "questions", "figures_right", "figures", "asked_right", "asked")


def _groups(items: list[dict], key) -> dict[tuple, list[bool]]:
    groups: dict[tuple, list[bool]] = defaultdict(list)
    for item in items:
        k = key(item)
        if k is not None:
            groups[k].append(bool(item["correct"]))
    return groups


def _keys(flavor: str):
    def ids(item, *names):
        return tuple(str(item.get(n)) for n in names)

    if flavor == VLMEVALKIT:
        def figure(item):
            return ids(item, "l2_category", "set_id", "figure_id")

        def question(item):
            return ids(item, "l2_category", "set_id", "question_id")
    else:
        def figure(item):
            if flavor == OFFICIAL and item.get("category") == "VS" and str(item.get("figure_id")) == "0":
                return None  # no figure: not part of the per-figure consistency test
            return ids(item, "category", "subcategory", "set_id", "figure_id")

        def question(item):
            return ids(item, "category", "subcategory", "set_id", "question_id")
    return figure, question


def hallusion_counts(items: Iterable[dict], flavor: str = OFFICIAL) -> tuple[int, ...]:
    """The :data:`COUNTS` of ``items`` under ``flavor``."""
    check_flavor(flavor)
    items = list(items)
    figure, question = _keys(flavor)
    figures, asked = _groups(items, figure), _groups(items, question)
    return (sum(bool(i["correct"]) for i in items), len(items), sum(all(v) for v in figures.values()), len(figures),
            sum(all(v) for v in asked.values()), len(asked))


def hallusion_values(sums_BK: np.ndarray) -> dict[str, np.ndarray]:
    """aAcc, fAcc, qAcc (×100) of ``[B, 6]`` summed :data:`COUNTS`, as ``[B]`` arrays (NaN where nothing counts)."""
    sums_BK = np.asarray(sums_BK, dtype=np.float64)

    def pct(num, den):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, 100.0 * num / np.where(den > 0, den, 1.0), np.nan)

    return {"aAcc": pct(sums_BK[:, 0], sums_BK[:, 1]), "fAcc": pct(sums_BK[:, 2], sums_BK[:, 3]),
            "qAcc": pct(sums_BK[:, 4], sums_BK[:, 5])}


def hallusion(items: Iterable[dict], flavor: str = OFFICIAL) -> dict[str, float | None]:
    """``{"aAcc", "fAcc", "qAcc"}`` (None for an empty set) for items as described in the module docstring."""
    values = hallusion_values(np.array(hallusion_counts(items, flavor), dtype=np.float64)[None])
    return {name: None if np.isnan(v[0]) else float(v[0]) for name, v in values.items()}
