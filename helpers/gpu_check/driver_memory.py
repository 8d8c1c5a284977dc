"""The driver's view of GPU memory while a job runs: nvidia-smi, sampled in a background thread.

torch's peak counts what its caching allocator handed out; the driver also counts the CUDA context, cuBLAS
workspaces and allocator fragmentation, which is what decides an out-of-memory on a real T4. nvidia-smi
reports memory per process id; in a container its ids may belong to another pid namespace, so when no
sampled id is one of the job's, the device's used memory above the level before the job is the figure,
and the record says that it is only valid when the job ran alone on the GPU.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

MIB = 2**20
PROCESSES_QUERY = ["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]
DEVICE_QUERY = ["--query-gpu=memory.used", "--format=csv,noheader,nounits", "--id=0"]


def parse_processes(text: str) -> dict[int, int]:
    """`pid, used MiB` lines of nvidia-smi -> {pid: bytes}; '[N/A]' entries are skipped."""
    used: dict[int, int] = {}
    for line in text.strip().splitlines():
        pid, _, mib = (part.strip() for part in line.partition(","))
        if pid.isdigit() and mib.isdigit():
            used[int(pid)] = int(mib) * MIB
    return used


def parse_device(text: str) -> int:
    """The first GPU's used memory (MiB on one line) -> bytes."""
    return int(text.strip().splitlines()[0]) * MIB


def nvidia_smi(arguments: list[str]) -> str:
    return subprocess.run(
        ["nvidia-smi", *arguments], capture_output=True, text=True, check=True, timeout=10
    ).stdout


@dataclass
class DriverPeak:
    """Peaks seen by the driver during one job: per process where ids match, and for the whole device."""

    baseline_device_bytes: int
    process_bytes: dict[int, int] = field(default_factory=dict)
    device_bytes: int = 0
    error: str | None = None

    def observe(self, processes: dict[int, int], device_bytes: int) -> None:
        for pid, used in processes.items():
            self.process_bytes[pid] = max(used, self.process_bytes.get(pid, 0))
        self.device_bytes = max(self.device_bytes, device_bytes)

    def summary(self, pids: Iterable[int], alone: bool) -> dict[str, object]:
        """The job's peak: its processes' largest figure, else the device's rise if the job ran alone."""
        if self.error is not None:
            return {"bytes": None, "method": f"not measured: nvidia-smi failed ({self.error})"}
        mine = [self.process_bytes[pid] for pid in pids if pid in self.process_bytes]
        if mine:
            return {"bytes": max(mine), "method": "nvidia-smi, per process"}
        if alone:
            return {
                "bytes": self.device_bytes - self.baseline_device_bytes,
                "method": "nvidia-smi, device used minus the level before the job (the job ran alone)",
            }
        return {
            "bytes": None,
            "method": "not measured: nvidia-smi's process ids are not this container's and other jobs shared the GPU",
        }


class DriverSampler:
    """`with DriverSampler() as peak:` samples nvidia-smi every `interval` seconds until the block ends."""

    def __init__(self, interval: float = 0.5, query: Callable[[list[str]], str] = nvidia_smi) -> None:
        if query is nvidia_smi and shutil.which("nvidia-smi") is None:
            raise FileNotFoundError("nvidia-smi is not on PATH: the driver's memory figures need it")
        self.interval = interval
        self.query = query
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.peak: DriverPeak | None = None

    def _sample(self) -> None:
        assert self.peak is not None
        self.peak.observe(
            parse_processes(self.query(PROCESSES_QUERY)), parse_device(self.query(DEVICE_QUERY))
        )

    def _run(self) -> None:
        assert self.peak is not None
        try:
            while not self._stop.wait(self.interval):
                self._sample()
        except (OSError, subprocess.SubprocessError, ValueError) as error:
            self.peak.error = str(error)  # the summary says so instead of reporting a partial peak

    def __enter__(self) -> DriverPeak:
        self.peak = DriverPeak(baseline_device_bytes=parse_device(self.query(DEVICE_QUERY)))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self.peak

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.peak is not None and self.peak.error is None:
            self._sample()  # a last reading, so a job shorter than one interval is still seen
