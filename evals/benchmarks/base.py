"""The declarative benchmark: reader layouts, prompt template, extractor, metric, aggregation, version.

A benchmark file (``evals/benchmarks/<name>.py``) subclasses :class:`Benchmark`, declares ``name``,
``version``, ``default_split``, ``video_sampling`` and its :meth:`layouts` (one per published format it
reads), and implements :meth:`prompt` (text per flavor), :meth:`score` (one prediction → extracted
answer + score) and, when the benchmark is not a plain mean, :meth:`aggregate`.

The pipeline contract (see :mod:`evals`):

* ``load(data_path, limit=None) -> Iterator[Sample]`` — ``data_path`` is the file or folder exactly as
  published; a missing or unrecognised path raises :class:`~evals.errors.DatasetError` immediately
  (naming the path and the expected layouts); a bad row becomes a Sample with ``error``.
* ``build_messages(sample, flavor) -> list[dict]`` — chat messages.
* ``score(record, prediction, flavor) -> (extracted, score)`` — ``record = sample.to_record()``.
* ``aggregate(rows, flavor) -> list[metric rows]``.

Judge-scored benchmarks (``judged = True``: MathVista, MM-Vet, CharXiv) also say what to ask an LLM judge and how to
read its reply, per flavor, following the flavor's reference harness:

* ``judge_prompt(record, prediction, flavor) -> str | None`` — the judge's user message; None when the reference
  settles this answer without asking (then ``score`` decides).
* ``score_judged(record, prediction, reply, flavor) -> (extracted, score)``.

:func:`evals.scoring.score_rows` asks the judge (through the run's cache) and falls back to ``score`` — the rule the
references use without a judge — when no judge is given or it did not answer.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from evals.aggregate import count_rows, decode_rows, mean_rows
from evals.data_cache import stage
from evals.errors import DatasetError
from evals.flavors import OFFICIAL, check_flavor
from evals.media import MediaError
from evals.readers.hf_parquet import HF_LAYOUT, find_shards, iter_parquet, list_shards, require_columns
from evals.readers.tsv import TSV_LAYOUT, TsvImages, iter_rows, read_table
from evals.readers.values import RowError, text
from evals.sample import Media, Sample, decode_record
from evals.benchmarks.prompts import user_turn


@dataclass(frozen=True)
class Layout:
    """One published on-disk format a benchmark reads."""

    name: str
    description: str
    detect: Callable[[Path], bool]
    read: Callable[[Path, str], Iterator[Sample]]


def load_media(fn: Callable[[], list[Media]]) -> tuple[list[Media], str | None]:
    """Run a media builder; a :class:`MediaError` becomes an error string instead of an exception."""
    try:
        return fn(), None
    except MediaError as exc:
        return [], str(exc)


class Benchmark:
    """Base class; see the module docstring."""

    name: str = ""
    version: str = ""
    default_split: str = "test"
    video_sampling: dict | None = None
    #: flavor -> how that flavor's harness samples a video with fewer frames than ``video_sampling`` asks: a rule
    #: of ``ernie_vl.video_sampling.SHORT_VIDEO_RULES`` (flavors not listed: ``every_frame``); see :meth:`video_policy`
    short_video: dict[str, str] = {}
    #: whether the model reasons first (``enable_thinking``) when the run does not say (``--thinking``)
    thinking: bool = False
    tsv_patterns: tuple[str, ...] = ()
    #: the headline metric (overall row) a report shows first
    primary_metric: str = "accuracy"
    #: scored by an LLM judge when one is given (judge_prompt / score_judged), else by ``score``
    judged: bool = False
    #: ``max_tokens`` of this benchmark's judge requests
    judge_max_tokens: int = 256
    #: what :meth:`resampling_unit` keys, for the metrics table (``unit``)
    unit_name: str = "sample"

    # --- reading ----------------------------------------------------------------------------------

    def layouts(self) -> list[Layout]:
        raise NotImplementedError

    def expected_layouts(self) -> str:
        return "\n".join(f"  - {layout.name}: {layout.description}" for layout in self.layouts())

    def load(self, data_path, limit: int | None = None, *, split: str | None = None) -> Iterator[Sample]:
        """Samples of ``split`` (default :attr:`default_split`) from the published files at ``data_path``."""
        split = split or self.default_split
        if data_path is None:
            raise DatasetError(None, f"{self.name}: a dataset path is required", self.expected_layouts())
        try:  # data on remote storage (s3://...) is read from its local copy (evals.data_cache)
            path = Path(stage(str(data_path))).expanduser()
        except (FileNotFoundError, ValueError, OSError) as exc:
            raise DatasetError(data_path, f"{self.name}: cannot read the dataset location ({exc})",
                               self.expected_layouts()) from None
        if not path.exists():
            raise DatasetError(path, f"{self.name}: dataset path does not exist", self.expected_layouts())
        if not (path.is_dir() or path.is_file()):
            raise DatasetError(path, f"{self.name}: not a file or folder", self.expected_layouts())
        for layout in self.layouts():
            if layout.detect(path):
                samples = layout.read(path, split)
                return islice(samples, limit) if limit is not None else samples
        raise DatasetError(path, f"{self.name}: no known layout found", self.expected_layouts())

    def row_id(self, row: dict, number: int) -> str:
        """Stable id of a row even when the row is broken (override per benchmark)."""
        for key in ("index", "id", "question_id", "questionId"):
            value = text(row.get(key))
            if value is not None:
                return value
        return f"row{number}"

    def convert_rows(self, rows: Iterable[tuple[int, dict]], convert: Callable[[dict, int], Sample],
                     split: str) -> Iterator[Sample]:
        """Apply ``convert`` per row; a row that raises becomes a Sample carrying ``error``."""
        for number, row in rows:
            try:
                yield convert(row, number)
            except (RowError, MediaError, KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
                message = str(exc) if isinstance(exc, (RowError, MediaError)) else f"{type(exc).__name__}: {exc}"
                yield Sample(sample_id=self.row_id(row, number), benchmark=self.name, split=split,
                             question=text(row.get("question")) or "", error=message)

    def tsv_layout(self, required: tuple[str, ...], convert: Callable[[dict, int, TsvImages, str], Sample],
                   filter_split: bool = True, keep: Callable[[dict, str], bool] | None = None) -> Layout:
        """The VLMEvalKit TSV layout: a ``.tsv`` file, or a folder holding one named like :attr:`tsv_patterns`.

        ``filter_split``: keep only rows whose ``split`` column equals the requested split (MMBench,
        MMMU); off where that column means something else (ChartQA human/augmented). ``keep(row, split)``:
        another rule for the rows of a split (RefCOCO's ``RefCOCO_val`` labels).
        """

        def find(path: Path) -> Path | None:
            if path.is_file():
                return path if path.suffix.lower() == ".tsv" else None
            for pattern in self.tsv_patterns:
                hits = sorted(p for p in path.iterdir() if p.is_file() and fnmatch.fnmatch(p.name, pattern))
                if hits:
                    return hits[0]
            return None

        def read(path: Path, split: str) -> Iterator[Sample]:
            file = find(path)
            frame = read_table(file, required)
            images = TsvImages(frame, file)
            rows = iter_rows(frame, split if filter_split else None)
            if keep is not None:
                rows = ((n, row) for n, row in rows if keep(row, split))
            return self.convert_rows(rows, lambda row, n: convert(row, n, images, split), split)

        names = ", ".join(self.tsv_patterns)
        return Layout("vlmevalkit-tsv", f"{TSV_LAYOUT}{'; in a folder: ' + names if names else ''}",
                      lambda p: find(p) is not None, read)

    def hf_layout(self, required: tuple[str, ...], convert: Callable[[dict, int, Path, str], Sample],
                  configs: tuple[str, ...] = (), description: str = HF_LAYOUT) -> Layout:
        """The Hugging Face Parquet layout (``configs``: preferred config folders, e.g. ``("en",)``)."""

        def read(path: Path, split: str) -> Iterator[Sample]:
            shards = find_shards(path, split, configs, description)
            require_columns(shards, required, description)
            root = path if path.is_dir() else path.parent
            rows = ((n, row) for n, (_, row) in enumerate(iter_parquet(shards)))
            return self.convert_rows(rows, lambda row, n: convert(row, n, root, split), split)

        return Layout("hf-parquet", description, lambda p: bool(list_shards(p)), read)

    # --- prompting --------------------------------------------------------------------------------

    def video_policy(self, flavor: str) -> dict | None:
        """The frame policy of this benchmark under ``flavor`` (None without video): :attr:`video_sampling` and
        ``short_video``, the rule for a video with fewer frames than ``num_frames`` (sampled, never an error)."""
        if self.video_sampling is None:
            return None
        return {**self.video_sampling, "short_video": self.short_video.get(check_flavor(flavor), "every_frame")}

    def prompt(self, sample: Sample, flavor: str) -> str:
        """The text of the prompt for ``flavor`` (media are added by :meth:`build_messages`)."""
        raise NotImplementedError

    def build_messages(self, sample: Sample, flavor: str = OFFICIAL) -> list[dict]:
        """Chat messages: media first, then the flavor's prompt text."""
        check_flavor(flavor)
        return user_turn(sample, self.prompt(sample, flavor))

    # --- scoring ----------------------------------------------------------------------------------

    def score(self, record: dict, prediction: str, flavor: str = OFFICIAL) -> tuple[str | None, float | None]:
        """``(extracted answer, score)`` for one prediction; see the benchmark's docstring."""
        raise NotImplementedError

    def judge_prompt(self, record: dict, prediction: str, flavor: str = OFFICIAL) -> str | None:
        """The message asking a judge to grade ``prediction`` under ``flavor``'s reference, or None when that
        reference settles this answer without a judge (then :meth:`score` decides)."""
        return None

    def score_judged(self, record: dict, prediction: str, reply: str,
                     flavor: str = OFFICIAL) -> tuple[str | None, float | None]:
        """``(extracted answer, score)`` from the judge's ``reply`` to :meth:`judge_prompt`."""
        raise NotImplementedError(f"{self.name} is not judge-scored")

    def aggregate(self, rows: list[dict], flavor: str = OFFICIAL) -> list[dict]:
        """Default: mean score ×100 overall and per category, plus error/unparsed counts."""
        check_flavor(flavor)
        rows = decode_rows(rows)
        return mean_rows(self.name, flavor, "accuracy", rows) + count_rows(self.name, flavor, rows)

    # --- uncertainty (evals.bootstrap) -------------------------------------------------------------

    def resampling_unit(self, row: dict) -> str | None:
        """The unit the bootstrap draws ``row`` with: rows of one unit are not independent (an MMBench question's
        rotated copies, the questions on one MME image or Video-MME video) and are drawn together, so an interval
        is not narrowed by counting them as separate samples. Default: ``group`` when set, else the sample id."""
        for key in ("group", "sample_id"):
            value = row.get(key)
            if value is not None and value != "":
                return str(value)
        return None

    def resampled_copy(self, row: dict, copy: int) -> dict:
        """``row`` in the ``copy``-th (>= 1) extra draw of its unit in a bootstrap resample, with the identities
        :meth:`aggregate` groups by made distinct so that the copy counts as one more unit, not as more members of
        the first. Default: ``sample_id`` and ``group`` suffixed."""
        out = dict(row, sample_id=f"{row.get('sample_id')}~{copy}")
        if row.get("group") not in (None, ""):
            out["group"] = f"{row['group']}~{copy}"
        return out

    @staticmethod
    def record(record: dict[str, Any]) -> dict[str, Any]:
        """``record`` with its JSON fields decoded (accepts already-decoded records)."""
        return decode_record(record)

    def scoring_input(self, record: dict[str, Any], prediction, flavor: str) -> tuple[dict[str, Any], str]:
        """What a `score` starts from: the flavor checked, the record decoded (`record`), the prediction as text
        ('' for none)."""
        check_flavor(flavor)
        return self.record(record), "" if prediction is None else str(prediction)

    def __repr__(self) -> str:
        return f"<benchmark {self.name} {self.version}>"
