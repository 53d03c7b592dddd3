"""MMBench CircularEval for one question group, benchmarks.md §2.4.

Each question appears N times with its options rotated (``index = k·1e6 + base``); the group counts
only if every rotation is extracted to its own GT letter.

* official / vlmevalkit (``vlmeval/dataset/utils/multiple_choice.py prefetch_circular_group`` +
  ``mcq_circular_eval`` with ``exact_matching``): ``can_infer`` per rotation; any rotation inferred to a
  wrong letter (``Z`` included) fails the group; a rotation where nothing is inferred would go to the
  judge — without a judge the group fails.
* lmms-eval (``tasks/mmbench/mmbench_evals.py eval_sub_data``, ``static`` mode, predictions stripped in
  ``mmbench_process_results``): the legacy ``can_infer`` per rotation (wrong → fail), then for the
  rotations it could not read ``extract_mcq_answer`` over the row's option letters (empty or wrong → fail).

Each row: ``index``, ``prediction``, ``GT`` (or ``answer``), and option columns ``A``..``Z`` (missing,
None, NaN or empty = no such option).
"""

from __future__ import annotations

import string

from evals.extract.choice import can_infer, extract_mcq_answer, mmbench_legacy_can_infer
from evals.flavors import LMMS_EVAL, OFFICIAL, check_flavor


def row_choices(row: dict) -> dict[str, str]:
    """The option columns of a row as ``{letter: text}``, skipping absent options."""
    out = {}
    for letter in string.ascii_uppercase:
        value = row.get(letter)
        if value is None or (isinstance(value, float) and value != value) or str(value) == "":
            continue
        out[letter] = str(value)
    return out


def _gt(row: dict) -> str:
    return str(row["GT"] if "GT" in row else row["answer"])


def circular(rows: list[dict], flavor: str = OFFICIAL) -> int:
    """1 if every rotation of the group is answered with its own GT letter, else 0."""
    check_flavor(flavor)
    if not rows:
        return 0
    rows = sorted(rows, key=lambda r: int(r["index"]))
    if flavor == LMMS_EVAL:
        preds = [str(r.get("prediction") or "").strip() for r in rows]
        inferred = [mmbench_legacy_can_infer(p, row_choices(r)) for p, r in zip(preds, rows)]
        if any(got and got != _gt(r) for got, r in zip(inferred, rows)):
            return 0
        for got, pred, row in zip(inferred, preds, rows):
            if not got:
                letter = extract_mcq_answer(pred, sorted(row_choices(row)))
                if not letter or letter != _gt(row):
                    return 0
        return 1
    for row in rows:
        got = can_infer(str(row.get("prediction") or ""), row_choices(row))
        if got != _gt(row):  # wrong letter, "Z", or nothing inferred (no judge)
            return 0
    return 1
