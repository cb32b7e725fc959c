"""What the machine has: its memory (RAM, or the GPU's) and what a process uses, for the
memory budget of the loaded models (DESIGN §5)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def ram_mb() -> int:
    """The machine's RAM in MiB (``MemTotal``), or 0 when unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) >> 10
    except (OSError, ValueError, IndexError):
        pass
    return 0


def gpu_mb() -> int:
    """The memory of the first NVIDIA GPU in MiB (``nvidia-smi``), or 0 without one."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        answer = subprocess.run(
            [smi, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return int(answer.stdout.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return 0


def machine_budget_mb(gpu: bool) -> tuple[int, str]:
    """The default memory budget and where it came from: the GPU's memory when models
    offload layers to it (and one is found), else the RAM."""
    if gpu and (found := gpu_mb()):
        return found, "the GPU's memory (nvidia-smi)"
    return ram_mb(), "the machine's RAM (/proc/meminfo)"


def resident_mb(pid: int) -> int | None:
    """What process ``pid`` holds in RAM (``VmRSS``) in MiB, or None when unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) >> 10
    except (OSError, ValueError, IndexError):
        pass
    return None
