"""Prometheus multiprocess mode for the processes of one host (`serve`, `api --workers N`, `worker`).

Each process writes its counters to memory-mapped files in one directory, named by host and pid; the API's
/metrics reads them all. A process that has ended leaves its files: at each start they are folded into one
archive per metric type, so that totals survive restarts (Prometheus sees no reset) and files do not pile up.
Import nothing of prometheus_client's metrics here: `enable` must run before `app.metrics` is imported.
"""

from __future__ import annotations

import fcntl
import glob
import os
import socket
import sys
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"
HOST = socket.gethostname().replace("_", "-") or "host"
ARCHIVE = "archive"


def process_id() -> str:
    """This process's part of its file names: unique across containers that share the directory."""
    return f"{HOST}-{os.getpid()}"


def enable(directory: Path) -> None:
    """Switch this process (and the processes it starts) to multiprocess mode writing to ``directory``."""
    if "app.metrics" in sys.modules and os.environ.get(ENV) != str(directory):
        raise RuntimeError("metrics_files.enable() must run before app.metrics is imported")
    directory.mkdir(parents=True, exist_ok=True)
    os.environ[ENV] = str(directory)
    fold_dead(directory)


def fold_dead(directory: Path) -> int:
    """Fold the files of this host's ended processes into the archives; returns how many files were folded."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key
    from prometheus_client.multiprocess import MultiProcessCollector

    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        dead = [f for f in glob.glob(str(directory / "*.db")) if _ended(Path(f).stem)]
        if not dead:
            return 0
        for typ in ("counter", "histogram"):
            archive = directory / f"{typ}_{ARCHIVE}.db"
            files = [f for f in dead if Path(f).name.startswith(typ + "_")]
            if not files:
                continue
            sources = [*files, str(archive)] if archive.exists() else files
            merged = MultiProcessCollector.merge(sources, accumulate=False)
            tmp = directory / f"{typ}_{ARCHIVE}.tmp"
            tmp.unlink(missing_ok=True)
            out = MmapedDict(str(tmp))
            for metric in merged:
                for sample in metric.samples:
                    labels = dict(sample.labels)
                    key = mmap_key(metric.name, sample.name, list(labels), list(labels.values()), metric.documentation)
                    out.write_value(key, sample.value, 0.0)
            out.close()
            os.replace(tmp, archive)
        for f in dead:
            Path(f).unlink(missing_ok=True)
        return len(dead)


def _ended(stem: str) -> bool:
    """Whether a file's process (``<type>[_<mode>]_<host>-<pid>``) was on this host and has ended."""
    owner = stem.rsplit("_", 1)[-1]
    host, _, pid = owner.rpartition("-")
    if host != HOST or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
