"""Gateway metrics across processes: every gateway, wherever it runs on the exchange's host,
reports into one directory, and the exchange's /metrics sums them.

`hie up` runs the gateway in its own process by default; with HIE_GATEWAY_PROCESSES=N it
starts N `hie gateway` processes instead, and a deployment may run more under systemd
units of their own. Their counts live in those processes. Rather than a port to open,
guard and list in Prometheus for each of them, every `hie gateway` process keeps its
metrics in prometheus-client's multiprocess files (a memory-mapped file per process, in
``<data dir>/metrics/``, written as it counts), and `hie up` reads that directory on each
scrape and adds what it finds to its own gateway's counts: one target, behind the same
admin token and the same audit as the rest of /metrics.

Only counters and histograms are kept this way, so summing across processes is right;
a gateway that died keeps its counts until `hie up` next starts, which removes the files
of processes no longer running (Prometheus takes the drop as a counter reset). A gateway
on another host has no such directory to share; it would need a /metrics of its own.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, values
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.samples import Sample

ENVIRONMENT = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's name for the directory


def metrics_dir(data_dir: Path) -> Path:
    return data_dir / "metrics"


def report_to(directory: Path) -> None:
    """From now on, metrics made in this process keep their values in ``directory``. Call
    before any metric is made (a gateway process, as it starts)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.environ[ENVIRONMENT] = str(directory)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def forget_the_dead(directory: Path) -> None:
    """Remove the files of processes no longer running (their names end in the pid)."""
    for path in directory.glob("*.db"):
        pid = path.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class Summed:
    """A collector of the metrics in ``own`` (this process's) plus the same metrics in the
    processes reporting to ``directory``, sample by sample."""

    def __init__(self, own: CollectorRegistry, directory: Path | None) -> None:
        self.own = own
        self.directory = directory

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        totals: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        for family in self._sources():
            known = families.setdefault(family.name, family)
            if known is not family and known.type != family.type:
                continue  # not the same metric after all: ours is kept
            into = totals.setdefault(family.name, {})
            for sample in family.samples:
                if sample.name.endswith("_created"):  # a start time: no sum of it means much
                    continue
                key = (sample.name, tuple(sorted(sample.labels.items())))
                into[key] = into.get(key, 0.0) + sample.value
        for name, family in families.items():
            merged = Metric(family.name, family.documentation, family.type, family.unit)
            merged.samples = [
                Sample(sample, dict(labels), value)
                for (sample, labels), value in totals[name].items()
            ]
            yield merged

    def _sources(self) -> Iterable[Metric]:
        own = list(self.own.collect())
        yield from own
        if self.directory is None or not self.directory.is_dir():
            return
        names = {f.name for f in own}  # only the metrics gateways count
        for family in _read(self.directory):
            if family.name in names:
                yield family


def _read(directory: Path) -> Sequence[Metric]:
    files = [str(p) for p in directory.glob("*.db")]
    # Histograms come out with cumulative buckets, counters summed over the files.
    return list(MultiProcessCollector.merge(files, accumulate=True))  # type: ignore[no-untyped-call]
