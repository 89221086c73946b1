"""The pure parts of build_commands: path translation, what is refused or warned about, the build key."""

from __future__ import annotations

from pathlib import Path

import pytest

from swell.modelserver import BuildCommandError, BuildLayout, check_build_commands
from swell.modelserver._build import _changes, build_key, translate_paths

APP = Path("/cache/builds/k/app")


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("sed -i 's/A/B/g' /packages/constants/constants.py",
         "sed -i 's/A/B/g' /cache/builds/k/app/pkgs/constants/constants.py"),
        ("curl -o /app/data/w.bin http://x", "curl -o /cache/builds/k/app/weights/w.bin http://x"),
        ("cp x /app/model/", "cp x /cache/builds/k/app/src/"),
        ("cd /app && make", "cd /cache/builds/k/app && make"),
        ('echo "/app"', 'echo "/cache/builds/k/app"'),
        ("OUT=/app/data/x python gen.py", "OUT=/cache/builds/k/app/weights/x python gen.py"),
        # not Truss's paths: a folder that only starts alike, one under another root, a URL
        ("ls /apps /usr/app ./app /packagesx", "ls /apps /usr/app ./app /packagesx"),
        ("curl https://example.com/app/x", "curl https://example.com/app/x"),
    ],
)
def test_truss_image_paths_point_into_the_package_copy(command: str, expected: str) -> None:
    layout = BuildLayout(data_dir="weights", model_module_dir="src", bundled_packages_dir="pkgs")
    assert translate_paths(command, APP, layout) == expected


@pytest.mark.parametrize(
    ("command", "program"),
    [
        ("apt-get install -y ffmpeg", "apt-get"),
        ("apt-get update && apt-get install -y ffmpeg", "apt-get"),
        ("DEBIAN_FRONTEND=noninteractive apt install -y git", "apt"),
        ("sudo pip install x", "sudo"),
        ("echo ok; /usr/bin/yum install gcc", "yum"),
        ("true | env FOO=1 apk add curl", "apk"),
    ],
)
def test_commands_that_need_root_in_an_image_are_refused(command: str, program: str) -> None:
    refused, warnings = check_build_commands(["pip install x", command])
    assert len(refused) == 1 and refused[0][0] == 1 and warnings == []
    why = refused[0][1]
    assert f"`{command}` needs root inside a container image ({program}" in why
    assert "Swell runs build commands on the host" in why


@pytest.mark.parametrize(
    "command",
    ["pip install git+https://github.com/x/y", "mkdir -p data && echo apt-get > data/x", "python -c 'print(1)'",
     "cd /app && ls", "git clone https://x/y.git packages/y"],
)
def test_host_commands_pass_without_a_word(command: str) -> None:
    assert check_build_commands([command]) == ([], [])


def test_image_folders_are_a_warning_naming_command_and_folder() -> None:
    refused, warnings = check_build_commands(["true", "cp weights.bin /usr/local/share/w.bin"])
    assert refused == [] and len(warnings) == 1
    assert warnings[0].startswith("build_commands[1] `cp weights.bin /usr/local/share/w.bin` names /usr/local")
    assert "write into the package" in warnings[0]


def test_the_key_changes_with_every_input_but_config_yaml(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.py").write_text("class Model: pass\n")
    (tmp_path / "config.yaml").write_text("model_name: a\n")
    base = build_key(["numpy"], ["echo 1"], {"A": "1"}, tmp_path)
    assert build_key(["numpy"], ["echo 1"], {"A": "1"}, tmp_path) == base
    assert build_key(["numpy"], ["echo 2"], {"A": "1"}, tmp_path) != base
    assert build_key(["numpy"], ["echo 1", "echo 1"], {"A": "1"}, tmp_path) != base
    assert build_key([], ["echo 1"], {"A": "1"}, tmp_path) != base
    assert build_key(["numpy"], ["echo 1"], {"A": "2"}, tmp_path) != base
    (tmp_path / "config.yaml").write_text("model_name: b\nautoscaling: {max_replica: 3}\n")
    assert build_key(["numpy"], ["echo 1"], {"A": "1"}, tmp_path) == base
    (tmp_path / "model" / "model.py").write_text("class Model: x = 1\n")
    assert build_key(["numpy"], ["echo 1"], {"A": "1"}, tmp_path) != base


def test_the_error_names_command_status_and_output_tail() -> None:
    output = "\n".join(f"line {i}" for i in range(100)) + "\nbash: haha: command not found\n"
    error = BuildCommandError(2, "haha lol", 127, output)
    text = str(error)
    assert text.startswith("build_commands[2] `haha lol` exited with status 127:\n")
    assert text.endswith("bash: haha: command not found") and "line 50" not in text and "line 99" in text
    assert error.as_dict() == {"index": 2, "command": "haha lol", "exit_code": 127, "timed_out": False,
                               "output": error.output_tail}
    late = BuildCommandError(0, "sleep 99", None, "", timeout=5)
    assert "did not finish within 5 s (the server's --build-timeout)" in str(late) and late.timed_out


def test_changes_are_new_changed_and_removed_paths_but_config_yaml() -> None:
    before = {"model": ("D", 1, 0, 0), "model/model.py": ("F", 2, 10, 5), "data/old": ("F", 3, 1, 1),
              "config.yaml": ("F", 4, 1, 1)}
    after = {"model": ("D", 1, 0, 9), "model/model.py": ("F", 9, 11, 6), "out": ("D", 5, 0, 0),
             "out/x.txt": ("F", 6, 2, 2), "config.yaml": ("F", 7, 2, 2), "model/__pycache__/m.pyc": ("F", 8, 1, 1)}
    assert _changes(before, after) == {"dirs": ["out"], "files": ["model/model.py", "out/x.txt"], "deleted": ["data/old"]}
