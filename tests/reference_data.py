"""Where the shared reference data lives (../shared/reference beside the checkout, or /work/shared)."""
from pathlib import Path

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
if not REFERENCE.is_dir():
    REFERENCE = Path("/work/shared/reference")
GOLDEN = REFERENCE / "official_micro_golden.pt"
