"""Resources: what a replica asks for, what the machine has, and how limits are enforced.

The pure parts (requests, capacity, placement, ``nvidia-smi`` parsing, the
memory message) are plain functions; :class:`Enforcer` is the thin runner that
writes cgroups or sets rlimits and affinity.

What is enforced, best first (``detect_enforcer`` picks once; the backend says
which in one log line):

- **cgroup v2**: a ``swell-<pid>`` group beside the server's own, with
  ``memory.max``, ``memory.swap.max`` = 0 and ``cpu.max``;
- **cgroup v1**: the same in the ``memory`` and ``cpu`` hierarchies
  (``memory.limit_in_bytes``, ``cpu.cfs_quota_us``);
- else **affinity and RLIMIT_AS**: the replica is pinned to ``ceil(cpu)``
  cores (the least used) and its address space may grow by ``memory`` beyond
  what it had when it started (address space is not resident memory: it is a
  loose bound, said so in the log).

Only what a package's ``resources:`` writes is reserved and enforced: a package
without ``cpu`` runs unlimited in CPU (Truss's default of one core is not
imposed, so a laptop runs more small models than it has cores).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import resource
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from swell.config import Resources
from swell.files import pid_alive

__all__ = [
    "Capacity",
    "Enforcer",
    "Gpu",
    "Placement",
    "ResourceRequest",
    "detect_enforcer",
    "format_memory",
    "free_amounts",
    "machine_capacity",
    "memory_exceeded_message",
    "parse_nvidia_smi",
    "place",
    "remove_stale_groups",
    "request_of",
]

logger = logging.getLogger("swell.serving.backends.process")

NVIDIA_SMI_QUERY = ["--query-gpu=index,name,memory.total,uuid", "--format=csv,noheader,nounits"]


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_mib: int
    uuid: str = ""


@dataclass(frozen=True)
class ResourceRequest:
    """What one replica reserves; ``None``/0 where its package set nothing."""

    cpu: float | None = None
    memory: int | None = None  # bytes
    memory_text: str = ""  # as written ("512Mi"), for messages
    gpus: int = 0
    gpu_type: str | None = None

    @property
    def empty(self) -> bool:
        return self.cpu is None and self.memory is None and self.gpus == 0

    def amounts(self) -> dict[str, float]:
        """What it reserves in Ray's names (``CPU``, ``memory``, ``GPU``), as capacity pressure counts it."""
        held = {"CPU": self.cpu or 0.0, "memory": float(self.memory or 0), "GPU": float(self.gpus)}
        return {name: amount for name, amount in held.items() if amount > 0}


def request_of(resources: Resources) -> ResourceRequest:
    """The fields the package wrote (pydantic's ``model_fields_set``), as a request."""
    written = resources.model_fields_set
    cpu = resources.cpu_cores if "cpu" in written else None
    memory = resources.memory_bytes if "memory" in written else None
    gpus = resources.gpu_count if ("accelerator" in written or "use_gpu" in written) else 0
    return ResourceRequest(
        cpu=cpu,
        memory=memory,
        memory_text=resources.memory if memory is not None else "",
        gpus=gpus,
        gpu_type=resources.gpu_type,
    )


@dataclass(frozen=True)
class Capacity:
    cpu: float
    memory: int
    gpus: tuple[Gpu, ...] = ()
    gpu_note: str = ""  # why there are none ("nvidia-smi not found")


@dataclass
class Placement:
    """What the machine has given out (the runner's bookkeeping)."""

    cpu: float = 0.0
    memory: int = 0
    gpus: set[int] = field(default_factory=set)
    cpu_load: dict[int, float] = field(default_factory=dict)  # affinity mode: core → reserved cores


def _gpu_matches(gpu: Gpu, kind: str | None) -> bool:
    if not kind:
        return True
    return kind.replace("_", " ").upper() in gpu.name.upper().replace("-", " ") or kind.upper() in gpu.name.upper()


def place(
    request: ResourceRequest, capacity: Capacity, used: Placement, cpu_overcommit: float = 1.0
) -> tuple[bool, str | None, tuple[int, ...]]:
    """(fits now, why not / why never, GPU indices to give it).

    ``why`` starting with ``never:`` means it can not fit on this machine at
    all (fail it); otherwise it waits as ``pending`` with that reason.
    Memory and GPUs are never given twice; CPU, which only slows a replica
    down when short, may be promised ``cpu_overcommit`` times over (each
    replica is still limited to its own ``cpu``).
    """
    never: list[str] = []
    if request.cpu is not None and request.cpu > capacity.cpu + 1e-9:
        never.append(f"{request.cpu:g} CPU (the machine has {capacity.cpu:g})")
    if request.memory is not None and request.memory > capacity.memory:
        never.append(f"{request.memory_text} of memory (the machine has {format_memory(capacity.memory)})")
    matching = [g for g in capacity.gpus if _gpu_matches(g, request.gpu_type)]
    if request.gpus > len(matching):
        kind = f" {request.gpu_type}" if request.gpu_type else ""
        have = f"{len(matching)}" if capacity.gpus else f"none: {capacity.gpu_note or 'no GPU found'}"
        never.append(f"{request.gpus}{kind} GPU(s) (the machine has {have})")
    if never:
        return False, "never: it needs " + " and ".join(never), ()
    short: list[str] = []
    cpus = capacity.cpu * cpu_overcommit
    if request.cpu is not None and used.cpu + request.cpu > cpus + 1e-9:
        over = f" ({capacity.cpu:g} cores × cpu_overcommit {cpu_overcommit:g})" if cpu_overcommit != 1 else ""
        short.append(f"{request.cpu:g} CPU, {max(0.0, cpus - used.cpu):g} of {cpus:g}{over} free")
    if request.memory is not None and used.memory + request.memory > capacity.memory:
        free = format_memory(max(0, capacity.memory - used.memory))
        short.append(f"{request.memory_text} of memory, {free} of {format_memory(capacity.memory)} free")
    free_gpus = [g.index for g in matching if g.index not in used.gpus]
    if request.gpus > len(free_gpus):
        short.append(f"{request.gpus} GPU(s), {len(free_gpus)} of {len(matching)} free")
    if short:
        return False, "waiting for resources: needs " + "; ".join(short), ()
    return True, None, tuple(free_gpus[: request.gpus])


def free_amounts(capacity: Capacity, used: Placement, cpu_overcommit: float = 1.0) -> dict[str, float]:
    """What :func:`place` would still give out, in :meth:`ResourceRequest.amounts`' names."""
    return {
        "CPU": capacity.cpu * cpu_overcommit - used.cpu,
        "memory": float(capacity.memory - used.memory),
        "GPU": float(len(capacity.gpus) - len(used.gpus)),
    }


def format_memory(size: int) -> str:
    for unit, factor in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if size >= factor:
            value = size / factor
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.1f}{unit}"
    return f"{size}B"


def memory_exceeded_message(limit_text: str, detail: str = "") -> str:
    return (
        f"the model exceeded its memory limit of {limit_text} and was stopped"
        + (f" ({detail})" if detail else "")
        + "; raise resources.memory in config.yaml"
    )


def parse_nvidia_smi(output: str) -> list[Gpu]:
    """``index, name, memory.total, uuid`` CSV lines (``nvidia-smi --query-gpu=… --format=csv,noheader,nounits``)."""
    gpus = []
    for line in output.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        try:
            memory = int(float(parts[2]))
        except ValueError:
            memory = 0
        gpus.append(Gpu(int(parts[0]), parts[1], memory, parts[3] if len(parts) > 3 else ""))
    return gpus


def query_gpus() -> tuple[list[Gpu], str]:
    """The GPUs ``nvidia-smi`` reports, or none and why."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return [], "nvidia-smi not found"
    try:
        out = subprocess.run([exe, *NVIDIA_SMI_QUERY], capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        return [], f"nvidia-smi failed: {exc}"
    gpus = parse_nvidia_smi(out.stdout)
    return gpus, "" if gpus else "nvidia-smi lists no GPU"


def _meminfo_total() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def machine_capacity(gpus: Sequence[Gpu] | None = None, gpu_note: str = "") -> Capacity:
    """Cores this process may run on, memory (the smaller of RAM and our own cgroup's limit), GPUs."""
    cpu = float(len(os.sched_getaffinity(0)))
    memory = _meminfo_total()
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        with contextlib.suppress(OSError, ValueError):
            text = Path(limit_file).read_text().strip()
            if text != "max":
                memory = min(memory, int(text))
    if gpus is None:
        found, gpu_note = query_gpus()
        gpus = found
    return Capacity(cpu=cpu, memory=memory, gpus=tuple(gpus), gpu_note=gpu_note)


# --------------------------------------------------------------------------- enforcement


_CPU_PERIOD_US = 100_000


class Enforcer:
    """Applies a request's limits to a started process; reads whether it ran out of memory."""

    mode = "none"

    def describe(self) -> str:
        return "resource limits are not enforced"

    def apply(self, replica_id: str, pid: int, request: ResourceRequest, cores: Sequence[int] = ()) -> str | None:
        """Limit ``pid``; returns a handle (a cgroup path) for :meth:`oom_killed` and :meth:`release`."""
        return None

    def oom_killed(self, group: str | None) -> bool:
        return False

    def release(self, group: str | None) -> None:
        pass

    def close(self) -> None:
        """Remove what it made (the parent groups), if empty."""


class CgroupV2(Enforcer):
    mode = "cgroup v2"

    def __init__(self, parent: Path) -> None:
        self.parent = parent

    def describe(self) -> str:
        return f"resources enforced with cgroup v2 (memory.max, cpu.max) under {self.parent}"

    def apply(self, replica_id: str, pid: int, request: ResourceRequest, cores: Sequence[int] = ()) -> str | None:
        group = self.parent / replica_id
        group.mkdir(exist_ok=True)
        if request.memory is not None:
            (group / "memory.max").write_text(str(request.memory))
            with contextlib.suppress(OSError):
                (group / "memory.swap.max").write_text("0")
        if request.cpu is not None:
            (group / "cpu.max").write_text(f"{int(request.cpu * _CPU_PERIOD_US)} {_CPU_PERIOD_US}")
        (group / "cgroup.procs").write_text(str(pid))
        return str(group)

    def oom_killed(self, group: str | None) -> bool:
        if group is None:
            return False
        with contextlib.suppress(OSError, ValueError):
            for line in (Path(group) / "memory.events").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
        return False

    def release(self, group: str | None) -> None:
        if group is not None:
            with contextlib.suppress(OSError):
                os.rmdir(group)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.rmdir(self.parent)


class CgroupV1(Enforcer):
    mode = "cgroup v1"

    def __init__(self, memory: Path, cpu: Path | None) -> None:
        self.memory = memory
        self.cpu = cpu

    def describe(self) -> str:
        cpu = f", cpu.cfs_quota_us under {self.cpu}" if self.cpu else ", CPU not limited"
        return f"resources enforced with cgroup v1 (memory.limit_in_bytes under {self.memory}{cpu})"

    def apply(self, replica_id: str, pid: int, request: ResourceRequest, cores: Sequence[int] = ()) -> str | None:
        group = self.memory / replica_id
        group.mkdir(exist_ok=True)
        if request.memory is not None:
            (group / "memory.limit_in_bytes").write_text(str(request.memory))
            with contextlib.suppress(OSError):  # no swap to escape into
                (group / "memory.memsw.limit_in_bytes").write_text(str(request.memory))
        (group / "cgroup.procs").write_text(str(pid))
        if self.cpu is not None and request.cpu is not None:
            cpu_group = self.cpu / replica_id
            cpu_group.mkdir(exist_ok=True)
            (cpu_group / "cpu.cfs_period_us").write_text(str(_CPU_PERIOD_US))
            (cpu_group / "cpu.cfs_quota_us").write_text(str(int(request.cpu * _CPU_PERIOD_US)))
            (cpu_group / "cgroup.procs").write_text(str(pid))
        return replica_id

    def oom_killed(self, group: str | None) -> bool:
        if group is None:
            return False
        with contextlib.suppress(OSError, ValueError):
            for line in (self.memory / group / "memory.oom_control").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
        return False

    def release(self, group: str | None) -> None:
        if group is None:
            return
        for root in (self.memory, self.cpu):
            if root is not None:
                with contextlib.suppress(OSError):
                    os.rmdir(root / group)

    def close(self) -> None:
        for root in (self.memory, self.cpu):
            if root is not None:
                with contextlib.suppress(OSError):
                    os.rmdir(root)


class AffinityRlimit(Enforcer):
    mode = "affinity+rlimit"

    def describe(self) -> str:
        return (
            "no writable cgroup here: CPU limited by affinity to ceil(cpu) cores, memory by RLIMIT_AS "
            "(address space, a loose bound on memory)"
        )

    def apply(self, replica_id: str, pid: int, request: ResourceRequest, cores: Sequence[int] = ()) -> str | None:
        if cores:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(pid, set(cores))
        if request.memory is not None:
            base = _vm_size(pid)
            limit = base + request.memory
            with contextlib.suppress(OSError, ValueError):
                resource.prlimit(pid, resource.RLIMIT_AS, (limit, limit))
        return None


def _vm_size(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _cgroup_v2_parent(root: Path, tag: str) -> Path | None:
    """A writable v2 group with the memory and cpu controllers for our children."""
    try:
        if not (root / "cgroup.controllers").is_file():
            return None
        own = ""
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                own = line[3:].strip().lstrip("/")
        # Our own group usually holds processes (us), so children may not get
        # controllers there: make a sibling, under our parent.
        base = (root / own).parent if own else root
        wanted = {"memory", "cpu"}
        if not wanted <= set((base / "cgroup.controllers").read_text().split()):
            return None
        enabled = set((base / "cgroup.subtree_control").read_text().split())
        if not wanted <= enabled:
            (base / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in sorted(wanted - enabled)))
        parent = base / tag
        parent.mkdir(exist_ok=True)
        (parent / "cgroup.subtree_control").write_text("+memory +cpu")
        return parent
    except OSError:
        return None


def _cgroup_v1(root: Path, tag: str) -> tuple[Path, Path | None] | None:
    memory_root = root / "memory"
    if not (memory_root / "memory.limit_in_bytes").is_file():
        return None
    try:
        memory = memory_root / tag
        memory.mkdir(exist_ok=True)
        probe = memory / "probe"
        probe.mkdir(exist_ok=True)
        (probe / "memory.limit_in_bytes").write_text(str(1 << 30))
        probe.rmdir()
    except OSError:
        return None
    cpu: Path | None = None
    for name in ("cpu", "cpu,cpuacct"):
        candidate = root / name
        if (candidate / "cpu.cfs_quota_us").is_file():
            try:
                (candidate / tag).mkdir(exist_ok=True)
                cpu = candidate / tag
            except OSError:
                cpu = None
            break
    return memory, cpu


def remove_stale_groups(root: Path = Path("/sys/fs/cgroup")) -> list[Path]:
    """Remove the ``swell-<pid>`` groups (and their empty replica groups) of servers that are
    gone: killed before they could remove them.  A group with a process in it stays."""
    bases: set[Path] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::") and (root / "cgroup.controllers").is_file():
                own = line[3:].strip().lstrip("/")
                bases.add((root / own).parent if own else root)
    for name in ("memory", "cpu", "cpu,cpuacct"):
        if (root / name).is_dir():
            bases.add((root / name).resolve())
    removed = []
    for base in bases:
        with contextlib.suppress(OSError):
            for group in base.iterdir():
                pid = group.name.removeprefix("swell-")
                if group.name == pid or not pid.isdigit() or pid_alive(int(pid)) or not group.is_dir():
                    continue
                with contextlib.suppress(OSError):
                    for child in group.iterdir():
                        if child.is_dir():
                            with contextlib.suppress(OSError):
                                child.rmdir()
                    group.rmdir()
                    removed.append(group)
    return removed


def detect_enforcer(root: Path = Path("/sys/fs/cgroup"), tag: str | None = None) -> Enforcer:
    """The best way to enforce limits on this machine (see the module's doc)."""
    tag = tag or f"swell-{os.getpid()}"
    if os.environ.get("SWELL_RESOURCES_ENFORCE") == "rlimit":  # tests of the fallback on a cgroup machine
        return AffinityRlimit()
    parent = _cgroup_v2_parent(root, tag)
    if parent is not None:
        return CgroupV2(parent)
    v1 = _cgroup_v1(root, tag)
    if v1 is not None:
        return CgroupV1(*v1)
    return AffinityRlimit()


def pick_cores(request: ResourceRequest, used: Placement, allowed: Sequence[int]) -> tuple[int, ...]:
    """The least loaded ``ceil(cpu)`` cores (affinity mode)."""
    if request.cpu is None or not allowed:
        return ()
    count = min(len(allowed), max(1, math.ceil(request.cpu - 1e-9)))
    order = sorted(allowed, key=lambda c: (used.cpu_load.get(c, 0.0), c))
    return tuple(order[:count])




def cuda_visible_devices(indices: Sequence[int]) -> str:
    return ",".join(str(i) for i in indices)
