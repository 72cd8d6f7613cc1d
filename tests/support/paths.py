"""Where the repository and the real datasets are."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("CADAPT_DATA_DIR", ROOT.parent / "shared" / "data"))
