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

from evals.flavors import OFFICIAL, VLMEVALKIT, check_flavor

METRICS = ("aAcc", "fAcc", "qAcc")


def _all_correct(items: list[dict], key) -> float | None:
    groups: dict[tuple, list[bool]] = defaultdict(list)
    for item in items:
        k = key(item)
        if k is not None:
            groups[k].append(bool(item["correct"]))
    if not groups:
        return None
    return 100.0 * sum(all(v) for v in groups.values()) / len(groups)


def hallusion(items: Iterable[dict], flavor: str = OFFICIAL) -> dict[str, float | None]:
    """``{"aAcc", "fAcc", "qAcc"}`` (None for an empty set) for items as described in the module docstring."""
    check_flavor(flavor)
    items = list(items)
    if not items:
        return {name: None for name in METRICS}

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

    return {"aAcc": 100.0 * sum(bool(i["correct"]) for i in items) / len(items),
            "fAcc": _all_correct(items, figure), "qAcc": _all_correct(items, question)}
