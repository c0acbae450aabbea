"""The demo's webhook sealing key, kept beside its embedded database so secrets sealed in one run open in the next."""

from __future__ import annotations

import os
from pathlib import Path

from exporter.core.sealing import new_key

KEY_FILE = "webhook-secret-keys"


def demo_webhook_keys(data_dir: Path) -> str:
    """EXPORTER_WEBHOOK_SECRET_KEYS for the demo: read from `data_dir`, or made there on the first run (0600)."""
    path = data_dir / KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another demo made it meanwhile: use that one
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(new_key("demo") + "\n")
    return path.read_text().strip()
