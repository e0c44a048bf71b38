"""Writing key files safely: never through a symlink, never into someone else's file, 0600.

`write_file(path, data, mode)` creates a new file next to `path` with
O_CREAT|O_EXCL|O_NOFOLLOW (a planted file or symlink under that name makes it fail,
not write through), sets `mode` on the open descriptor (the umask cannot widen it and
an old file's mode is never kept), fsyncs it and renames it over `path`. A symlink at
`path` itself is replaced, not followed. With `exclusive`, an existing `path` is an
error (FileExistsError) instead of being replaced.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

PRIVATE = 0o600
PUBLIC = 0o644


def write_file(path: Path, data: bytes, mode: int = PRIVATE, exclusive: bool = False) -> None:
    if exclusive and (path.exists() or path.is_symlink()):
        raise FileExistsError(f"{path} exists; pass --force to replace it")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if exclusive:
        try:
            os.link(tmp, path)  # atomic and fails if something appeared meanwhile
        finally:
            tmp.unlink(missing_ok=True)
    else:
        os.replace(tmp, path)


PASSWORD_ENV = "SMARTPOLE_MQTT_PASSWORD"


def broker_password(password_file: Path | None) -> str | None:
    """The broker password for polectl's MQTT clients: the first line of `password_file`,
    else $SMARTPOLE_MQTT_PASSWORD, else none. Never a command-line value (visible in ps)."""
    if password_file is not None:
        text = password_file.read_text(encoding="utf-8")
        return text.splitlines()[0] if text else ""
    return os.environ.get(PASSWORD_ENV)
