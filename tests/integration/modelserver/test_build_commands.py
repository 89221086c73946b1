"""ensure_build with real shells and a real virtual environment: what the commands write reaches
the package, the build is reused for the same inputs and made anew for new ones, a failing or
late command fails it and leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swell.modelserver import BuildCommandError, build_site_packages, ensure_build
from swell.modelserver._build import layered_python
from swell.modelserver._environment import MARKER


def _package(root: Path) -> Path:
    (root / "model").mkdir(parents=True)
    (root / "model" / "model.py").write_text("class Model:\n    def predict(self, x):\n        return x\n")
    (root / "packages" / "constants").mkdir(parents=True)
    (root / "packages" / "constants" / "constants.py").write_text('TEST_KEY = "TEST_FIRST_VALUE"\n')
    (root / "config.yaml").write_text("model_name: b\n")
    return root


def _copy(source: Path, target: Path) -> Path:
    """A second push of the same package: a fresh folder with the same files."""
    subprocess.run(["cp", "-r", str(source), str(target)], check=True)
    return target


def test_commands_change_the_package_and_install_into_their_own_environment(tmp_path: Path) -> None:
    package = _package(tmp_path / "pkg")
    lines: list[str] = []
    python = ensure_build(
        [
            "sed -i 's/TEST_FIRST_VALUE/TEST_SECOND_VALUE/g' /packages/constants/constants.py",
            "mkdir -p data && echo \"$GREETING from $(basename $PWD)\" > data/greeting.txt",
            "echo $VIRTUAL_ENV > data/venv.txt && python -c 'import sys; print(sys.prefix)' >> data/venv.txt",
            "rm model/model.py && printf 'class Model:\\n    pass\\n' > model/model.py",
        ],
        package, tmp_path / "envs", requirements=[], base_python=sys.executable,
        env={"GREETING": "hello"}, timeout=60, log=lines.append,
    )
    assert (package / "packages" / "constants" / "constants.py").read_text() == 'TEST_KEY = "TEST_SECOND_VALUE"\n'
    assert (package / "data" / "greeting.txt").read_text() == "hello from app\n"
    venv = python.parents[1]
    assert (package / "data" / "venv.txt").read_text().split() == [str(venv), str(venv)]
    assert (package / "model" / "model.py").read_text() == "class Model:\n    pass\n"
    assert any("build_commands[0]: running `sed -i" in line for line in lines)
    # Swell and Truss's server packages stay importable from the build's environment.
    check = subprocess.run([str(python), "-c", "import swell, opentelemetry.sdk, loguru, requests"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert check.returncode == 0, check.stderr


def test_the_same_inputs_reuse_the_build_and_new_commands_make_a_new_one(tmp_path: Path) -> None:
    package = _package(tmp_path / "pkg")
    counter = tmp_path / "runs"
    commands = ["mkdir -p data && date +%s%N > data/stamp && echo run >> $COUNTER"]
    env = {"COUNTER": str(counter)}

    def build(pkg: Path, cmds: list[str]) -> Path:
        return ensure_build(cmds, pkg, tmp_path / "envs", requirements=[], base_python=sys.executable, env=env, timeout=60)

    first = build(_copy(package, tmp_path / "push1"), commands)
    again = build(_copy(package, tmp_path / "push2"), commands)
    assert first == again and counter.read_text() == "run\n"
    assert (tmp_path / "push1" / "data" / "stamp").read_text() == (tmp_path / "push2" / "data" / "stamp").read_text()
    changed = build(_copy(package, tmp_path / "push3"), [*commands, "true"])
    assert changed != first and counter.read_text() == "run\nrun\n"
    (package / "model" / "model.py").write_text("class Model:\n    pass\n")  # the code the commands see changed
    build(_copy(package, tmp_path / "push4"), commands)
    assert counter.read_text() == "run\nrun\nrun\n"


def test_a_failing_command_fails_the_build_with_its_status_and_output(tmp_path: Path) -> None:
    package = _package(tmp_path / "pkg")
    with pytest.raises(BuildCommandError) as info:
        ensure_build(["mkdir example_dir", "cd example_dir && touch testing.py", "echo before; haha lol"],
                     package, tmp_path / "envs", requirements=[], base_python=sys.executable, timeout=60)
    error = info.value
    assert (error.index, error.command, error.exit_code, error.timed_out) == (2, "echo before; haha lol", 127, False)
    assert "before" in error.output_tail and "haha: command not found" in error.output_tail
    assert not (package / "example_dir").exists()  # nothing of a failed build reaches the package
    builds = tmp_path / "envs" / "builds"
    assert [p for p in builds.iterdir() if p.is_dir()] == [] and not list(builds.glob(f"*/{MARKER}"))


def test_a_command_past_the_time_limit_is_killed_with_its_children(tmp_path: Path) -> None:
    package = _package(tmp_path / "pkg")
    pid_file = tmp_path / "child.pid"
    with pytest.raises(BuildCommandError) as info:
        ensure_build([f"echo waiting; sleep 300 & echo $! > {pid_file}; wait"], package, tmp_path / "envs",
                     requirements=[], base_python=sys.executable, timeout=1)
    error = info.value
    assert error.timed_out and error.exit_code is None and "waiting" in error.output_tail
    assert "did not finish within 1 s" in str(error)
    _assert_gone(int(pid_file.read_text()))


def _assert_gone(pid: int) -> None:
    """The command's process group was killed: ``pid`` is gone (or a zombie being reaped)."""
    stat = Path(f"/proc/{pid}/stat")
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        if stat.exists() and stat.read_text().split()[2] == "Z":
            return
        time.sleep(0.05)
    pytest.fail(f"the command's child {pid} outlived it")


def test_what_a_command_leaves_running_is_stopped_with_it(tmp_path: Path) -> None:
    package = _package(tmp_path / "pkg")
    pid_file = tmp_path / "daemon.pid"
    ensure_build([f"sleep 300 > /dev/null 2>&1 & echo $! > {pid_file}"], package, tmp_path / "envs",
                 requirements=[], base_python=sys.executable, timeout=60)
    _assert_gone(int(pid_file.read_text()))


def test_what_a_build_installed_can_be_layered_elsewhere_as_a_ray_node_does(tmp_path: Path) -> None:
    package = _package(tmp_path / "pkg")
    python = ensure_build(
        ["echo 'X = 42' > \"$(python -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])')/installed.py\""],
        package, tmp_path / "envs", requirements=[], base_python=sys.executable, timeout=60,
    )
    site = build_site_packages(python)
    assert site is not None and (site / "installed.py").is_file()
    assert build_site_packages(sys.executable) is None
    shipped = tmp_path / "node" / "packages" / "abc"  # as unpacked on a node
    shutil.copytree(site, shipped)
    node_python = layered_python(shipped, sys.executable, tmp_path / "node" / "envs")
    assert layered_python(shipped, sys.executable, tmp_path / "node" / "envs") == node_python  # reused
    check = subprocess.run([str(node_python), "-c", "import installed, swell, loguru; print(installed.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert check.returncode == 0 and check.stdout.strip() == str(shipped / "installed.py"), check.stderr
