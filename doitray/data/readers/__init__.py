"""Readers: one per source format, each turning files into canonical records plus a quarantine.

A reader is ``read(spec, quarantine) -> Iterator[dict]``: it yields record dicts (``records.make_record``)
and puts every row it cannot parse into ``quarantine`` with its file, line and reason. Validation of the
yielded records (``records.validate_record``) and duplicate-id checks happen once, in ``sources``.
"""
from __future__ import annotations

from typing import Callable, Iterator

from doitray.data.readers import doit, exams, formats

Reader = Callable[..., Iterator[dict]]

READERS: dict[str, Reader] = {
    "doit": doit.read_doit,
    "alpaca": formats.read_alpaca,
    "sharegpt": formats.read_sharegpt,
    "gsm8k": formats.read_gsm8k,
    "humaneval": formats.read_humaneval,
    "mbpp": formats.read_mbpp,
    "cmmlu": exams.read_cmmlu,
    "agieval": exams.read_agieval,
    "c3": exams.read_c3,
    "jsonl": formats.read_generic,
    "parquet": formats.read_generic,
}

__all__ = ["READERS", "Reader"]
