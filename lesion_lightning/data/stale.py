"""Remove the temporaries of killed runs: ``[.]<name>.tmp-<host>-<pid>[.npy]`` whose process is gone.

Every writer here writes to a temporary name and renames it when complete, so a killed cache build
or encode leaves its temporary behind (an ``images.npy`` can be gigabytes). A temporary is stale when
its name says it belongs to this host (or names no host) and no process with its pid is alive; one of
a live process, or of another host sharing the file system, is never touched.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path

from lesion_lightning.data.records import shown

_TMP = re.compile(r"\.tmp-(?:(?P<host>.+)-)?(?P<pid>\d+)(?:\.npy)?$")


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    except OSError:
        return True  # cannot tell: keep the file
    return True


def remove_stale_temporaries(directory: Path, prefix: str = "") -> list[str]:
    """Delete stale temporaries directly inside ``directory`` whose names start with ``prefix``.

    Returns one line per removed entry (for the caller to log).
    """
    if not directory.is_dir():
        return []
    host = socket.gethostname()
    removed = []
    for path in sorted(directory.iterdir()):
        match = _TMP.search(path.name)
        if not match or not path.name.startswith(prefix):
            continue
        if match["host"] is not None and match["host"] != host:
            continue
        if pid_alive(int(match["pid"])):
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            continue  # removed by someone else meanwhile, or not ours to remove
        removed.append(f"{shown(path)} (pid {match['pid']} is gone)")
    return removed
