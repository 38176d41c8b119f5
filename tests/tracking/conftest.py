"""The tracking tests reuse the study tests' tiny real study (tests/study/studykit.py)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "study"))
