"""Where the repository and the shared real data are."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The real annotated audio lives in ../shared beside the checkout (CI clones next to it).
DATA = ROOT.parent / "shared" / "data"
BEATS_DIR = DATA / "beats"
