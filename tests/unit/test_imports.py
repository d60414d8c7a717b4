"""The logical layers import without Ray (Ray Data's logical/physical split)."""

from __future__ import annotations

import subprocess
import sys

RAY_FREE = [
    "neuraflow",
    "neuraflow.ops",
    "neuraflow.devices",
    "neuraflow.sinks",
    "neuraflow.graph.pipeline",
    "neuraflow.graph.optimize",
    "neuraflow.runtime.local",
    "neuraflow.storage",
    "neuraflow.sync",
    "neuraflow.config",
]


def test_logical_layers_do_not_import_ray() -> None:
    code = "import sys\n" + "".join(f"import {m}\n" for m in RAY_FREE) + "print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", f"a Ray-free module imported ray: {out.stderr}"
