"""Resources, pure parts: what a package asks for, whether it fits, nvidia-smi's
output, and the files a cgroup enforcer writes (into a directory standing in
for /sys/fs/cgroup)."""

from __future__ import annotations

from pathlib import Path

import pytest

from swell.config import Resources
from swell.serving.backends.process._resources import (
    Capacity,
    CgroupV1,
    CgroupV2,
    Gpu,
    Placement,
    ResourceRequest,
    format_memory,
    memory_exceeded_message,
    parse_nvidia_smi,
    pick_cores,
    place,
    request_of,
)

MI = 1 << 20
GI = 1 << 30

# `nvidia-smi --query-gpu=index,name,memory.total,uuid --format=csv,noheader,nounits` on a 2-GPU host
NVIDIA_SMI = """\
0, NVIDIA H100 80GB HBM3, 81559, GPU-6f1c0e4e-2f05-3b4a-9f26-7a1b6f1f3c11
1, NVIDIA A10G, 23028, GPU-0a9d9d3c-1b7e-4e0e-8f43-3c6f6a0b6c22
"""


def test_nvidia_smi_output_is_parsed() -> None:
    assert parse_nvidia_smi(NVIDIA_SMI) == [
        Gpu(0, "NVIDIA H100 80GB HBM3", 81559, "GPU-6f1c0e4e-2f05-3b4a-9f26-7a1b6f1f3c11"),
        Gpu(1, "NVIDIA A10G", 23028, "GPU-0a9d9d3c-1b7e-4e0e-8f43-3c6f6a0b6c22"),
    ]
    assert parse_nvidia_smi("No devices were found\n") == []


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ({}, ResourceRequest()),  # nothing written: nothing reserved (Truss's defaults are not imposed)
        ({"cpu": "250m"}, ResourceRequest(cpu=0.25)),
        ({"memory": "512Mi"}, ResourceRequest(memory=512 * MI, memory_text="512Mi")),
        ({"use_gpu": True}, ResourceRequest(gpus=1)),
        ({"accelerator": "A10G:2"}, ResourceRequest(gpus=2, gpu_type="A10G")),
    ],
)
def test_request_holds_what_the_package_wrote(written: dict[str, object], expected: ResourceRequest) -> None:
    assert request_of(Resources.model_validate(written)) == expected


MACHINE = Capacity(cpu=2.0, memory=4 * GI, gpus=tuple(parse_nvidia_smi(NVIDIA_SMI)))


@pytest.mark.parametrize(
    ("request_", "used", "fits", "why", "gpus"),
    [
        (ResourceRequest(cpu=1.0), Placement(cpu=1.0), True, None, ()),
        (ResourceRequest(cpu=1.0), Placement(cpu=1.5), False, "waiting for resources: needs 1 CPU, 0.5 of 2 free", ()),
        (
            ResourceRequest(memory=2 * GI, memory_text="2Gi"),
            Placement(memory=3 * GI),
            False,
            "waiting for resources: needs 2Gi of memory, 1Gi of 4Gi free",
            (),
        ),
        (ResourceRequest(cpu=4.0), Placement(), False, "never: it needs 4 CPU (the machine has 2)", ()),
        (ResourceRequest(gpus=1, gpu_type="A10G"), Placement(), True, None, (1,)),
        (ResourceRequest(gpus=1, gpu_type="H100"), Placement(), True, None, (0,)),
        (ResourceRequest(gpus=1), Placement(gpus={0}), True, None, (1,)),
        (
            ResourceRequest(gpus=1, gpu_type="A10G"),
            Placement(gpus={1}),
            False,
            "waiting for resources: needs 1 GPU(s), 0 of 1 free",
            (),
        ),
        (ResourceRequest(gpus=2, gpu_type="T4"), Placement(), False, "never: it needs 2 T4 GPU(s) (the machine has 0)", ()),
    ],
)
def test_placement(
    request_: ResourceRequest, used: Placement, fits: bool, why: str | None, gpus: tuple[int, ...]
) -> None:
    assert place(request_, MACHINE, used) == (fits, why, gpus)


def test_gpu_request_on_a_machine_without_nvidia_smi_says_so() -> None:
    machine = Capacity(cpu=2.0, memory=GI, gpus=(), gpu_note="nvidia-smi not found")
    fits, why, _ = place(ResourceRequest(gpus=1), machine, Placement())
    assert not fits and why == "never: it needs 1 GPU(s) (the machine has none: nvidia-smi not found)"


def test_cores_for_affinity_are_the_least_used() -> None:
    used = Placement(cpu_load={0: 1.0, 1: 0.0, 2: 0.5})
    assert pick_cores(ResourceRequest(cpu=1.5), used, [0, 1, 2, 3]) == (1, 3)
    assert pick_cores(ResourceRequest(cpu=0.25), used, [0, 1]) == (1,)
    assert pick_cores(ResourceRequest(), used, [0, 1]) == ()


def test_memory_words() -> None:
    assert format_memory(512 * MI) == "512Mi" and format_memory(3 * GI // 2) == "1.5Gi"
    assert memory_exceeded_message("512Mi").startswith("the model exceeded its memory limit of 512Mi")


def test_cgroup_v2_writes_limits_and_reads_oom_kills(tmp_path: Path) -> None:
    enforcer = CgroupV2(tmp_path)
    group = enforcer.apply("r-1", 4242, ResourceRequest(cpu=0.5, memory=512 * MI, memory_text="512Mi"))
    assert group is not None
    files = Path(group)
    assert (files / "memory.max").read_text() == str(512 * MI)
    assert (files / "memory.swap.max").read_text() == "0"
    assert (files / "cpu.max").read_text() == "50000 100000"
    assert (files / "cgroup.procs").read_text() == "4242"
    (files / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n")
    assert not enforcer.oom_killed(group)
    (files / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\n")
    assert enforcer.oom_killed(group)


def test_cgroup_v1_writes_memory_and_cpu_quota(tmp_path: Path) -> None:
    memory, cpu = tmp_path / "memory" / "swell", tmp_path / "cpu" / "swell"
    memory.mkdir(parents=True)
    cpu.mkdir(parents=True)
    enforcer = CgroupV1(memory, cpu)
    group = enforcer.apply("r-2", 77, ResourceRequest(cpu=1.5, memory=GI, memory_text="1Gi"))
    assert (memory / "r-2" / "memory.limit_in_bytes").read_text() == str(GI)
    assert (cpu / "r-2" / "cpu.cfs_quota_us").read_text() == "150000"
    (memory / "r-2" / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    assert enforcer.oom_killed(group)
