"""How every benchmark ends: its JSON on stdout (and in --out), with the machine's load."""

import json
import os
import platform
from pathlib import Path


def emit(result: dict, out: str | None = None) -> None:
    result["load_average_at_end"] = os.getloadavg()
    result["platform"] = platform.platform()
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        Path(out).write_text(text + "\n")
