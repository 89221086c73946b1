"""A deployment's life through the plane's lifecycle part: push, build, reload, deactivate, delete (fake backend)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from plane_support import published_and_ready, settle  # type: ignore[import-not-found]

from swell.config import DEVELOPMENT_AUTOSCALING
from swell.control import ApiError, ControlPlane, NotFound
from swell.serving._testing import FakeBackend

MakeArchive = Callable[..., Path]


async def test_first_published_deployment_goes_to_production(plane: ControlPlane, make_archive: MakeArchive) -> None:
    first = await plane.push(make_archive(), model_name="m", publish=True, promote=False)
    assert first.environment == "production" and first.status == "Scaled to zero"
    assert len(first.deployment_id) == 8 and len(first.model_id) == 8
    second = await plane.push(make_archive(), model_name="m", publish=True, promote=False)
    model = plane.registry.model("m")
    assert second.environment is None and model.environments["production"] == first.deployment_id
    third = await plane.push(make_archive(), model_name="m", publish=True, promote=True)
    assert third.environment == "production" and model.environments["production"] == third.deployment_id
    assert plane.router(model.id, "environments", "production").deployment_id == third.deployment_id
    assert plane.router("m", "deployment", first.deployment_id).deployment_id == first.deployment_id


async def test_development_push_reloads_the_development_deployment_in_place(
    plane: ControlPlane, backend: FakeBackend, make_archive: MakeArchive
) -> None:
    first = await plane.push(make_archive(), model_name="m", publish=False, promote=False)
    record = plane.registry.deployments[first.deployment_id]
    assert record.settings == DEVELOPMENT_AUTOSCALING and first.kind == "development"
    router = plane.router("m", "development", None)
    plane.controller.hold(record.id, 1)  # a replica is up, as after a predict
    await asyncio.sleep(0)
    backend.ready(backend.started[0].id)
    old_dir = record.package_dir
    second = await plane.push(make_archive(), model_name="m", publish=False, promote=False)
    await asyncio.sleep(0)
    assert second.deployment_id == first.deployment_id and record.revision == 2
    assert record.package_dir != old_dir and router.spec.package_dir == record.package_dir
    assert plane.router("m", "development", None) is router  # same queue, same URL
    assert backend.stopped == [backend.started[0].id] and len(backend.started) == 2  # replaced


async def test_autoscaling_comes_from_config_yaml(plane: ControlPlane, make_archive: MakeArchive) -> None:
    archive = make_archive({"model_name": "m", "autoscaling": {"max_replica": 3, "scale_down_delay": 30}})
    result = await plane.push(archive, model_name=None, publish=True, promote=False)
    settings = plane.registry.deployments[result.deployment_id].settings
    assert settings.max_replica == 3 and settings.scale_down_delay == 30 and result.model_name == "m"


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"model_name": "m", "bogus_key": 1}, "bogus_key"),
        ({"model_name": "m", "autoscaling": {"max_replica": 99}}, "autoscaling.max_replica"),
        ({"model_name": "m", "runtime": {"predict_concurrency": 0}}, "runtime.predict_concurrency"),
    ],
)
async def test_bad_config_is_422_naming_the_field(
    plane: ControlPlane, make_archive: MakeArchive, config: dict, field: str
) -> None:
    with pytest.raises(ApiError) as info:
        await plane.push(make_archive(config), model_name=None, publish=True, promote=False)
    assert info.value.status == 422
    assert field in {d["field"] for d in info.value.payload["detail"]}
    assert plane.registry.models == {}


async def test_ignored_truss_keys_are_warnings(plane: ControlPlane, make_archive: MakeArchive) -> None:
    result = await plane.push(make_archive({"model_name": "m", "python_version": "py311"}), model_name=None, publish=True, promote=False)
    assert any("python_version" in w for w in result.warnings)


async def test_truss_settings_that_change_behaviour_are_warnings(plane: ControlPlane, make_archive: MakeArchive) -> None:
    config = {"model_name": "m", "runtime": {"health_checks": {"restart_threshold_seconds": 600}}}
    result = await plane.push(make_archive(config), model_name=None, publish=True, promote=False)
    assert any(w.startswith("runtime.health_checks (restart_threshold_seconds) is not acted on") for w in result.warnings)


async def test_not_a_tarball_is_400(plane: ControlPlane, tmp_path) -> None:  # type: ignore[no-untyped-def]
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tarball")
    with pytest.raises(ApiError) as info:
        await plane.push(junk, model_name="m", publish=True, promote=False)
    assert info.value.status == 400


def _pip_fails(monkeypatch: pytest.MonkeyPatch, pip_output: str) -> None:
    from swell.control import _lifecycle as _plane
    from swell.modelserver import RequirementsInstallError

    def fail(requirements: list[str], cache_dir: Path) -> Path:
        raise RequirementsInstallError(requirements, pip_output)

    monkeypatch.setattr(_plane, "ensure_environment", fail)


async def test_requirements_failure_is_422_and_a_failed_deployment(
    plane: ControlPlane, make_archive: MakeArchive, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pip_fails(monkeypatch, "ERROR: No matching distribution found for nope==9")
    archive = make_archive({"model_name": "m", "requirements": ["nope==9"]})
    with pytest.raises(ApiError) as info:
        await plane.push(archive, model_name=None, publish=True, promote=False)
    assert info.value.status == 422
    assert "nope" in info.value.payload["reason"] and info.value.payload["status"] == "Failed"
    record = plane.registry.deployments[info.value.payload["deployment_id"]]
    assert plane.views.deployment_view(record)["status"] == "Failed" and "nope" in (record.error or "")
    with pytest.raises(ApiError) as unavailable:
        plane.router("m", "deployment", record.id)
    assert unavailable.value.status == 503


async def test_a_requirements_failure_names_the_python_the_package_was_written_for(
    plane: ControlPlane, make_archive: MakeArchive, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Modelled on Truss's old sklearn packages: python_version py39, pins without wheels for newer Pythons.
    _pip_fails(monkeypatch, "error: metadata-generation-failed")
    archive = make_archive({"model_name": "m", "python_version": "py37", "requirements": ["scikit-learn==1.0.2"]})
    with pytest.raises(ApiError) as info:
        await plane.push(archive, model_name=None, publish=True, promote=False)
    last = info.value.payload["reason"].splitlines()[-1]
    assert "python_version py37 (Truss builds its image with Python 3.7)" in last and "replicas here run Python 3." in last


async def test_failed_development_build_keeps_the_old_development_deployment(
    plane: ControlPlane, make_archive: MakeArchive, monkeypatch: pytest.MonkeyPatch
) -> None:
    from swell.control import _lifecycle as _plane
    from swell.modelserver import RequirementsInstallError

    good = await plane.push(make_archive(), model_name="m", publish=False, promote=False)

    def fail(requirements: list[str], cache_dir: Path) -> Path:
        raise RequirementsInstallError(requirements, "ERROR: No matching distribution found for nope==9")

    monkeypatch.setattr(_plane, "ensure_environment", fail)
    with pytest.raises(ApiError):
        await plane.push(make_archive({"model_name": "m", "requirements": ["nope==9"]}), model_name=None, publish=False, promote=False)
    assert plane.registry.model("m").development == good.deployment_id
    assert plane.router("m", "development", None).deployment_id == good.deployment_id


async def test_requirements_are_built_into_the_replica_python(
    plane: ControlPlane, make_archive: MakeArchive, monkeypatch: pytest.MonkeyPatch
) -> None:
    from swell.control import _lifecycle as _plane

    seen: list[list[str]] = []

    def build(requirements: list[str], cache_dir: Path) -> Path:
        seen.append(requirements)
        return Path("/venvs/x/bin/python")

    monkeypatch.setattr(_plane, "ensure_environment", build)
    result = await plane.push(make_archive({"model_name": "m", "requirements": ["numpy"]}), model_name=None, publish=True, promote=False)
    assert seen == [["numpy"]]
    router = plane.controller.get(result.deployment_id).router  # type: ignore[union-attr]
    assert router.spec.python == "/venvs/x/bin/python"


async def test_package_without_its_model_file_is_422_naming_it(plane: ControlPlane, tmp_path: Path) -> None:
    import tarfile

    root = tmp_path / "nomodel"
    root.mkdir()
    (root / "config.yaml").write_text("model_name: m\n")
    archive = tmp_path / "nomodel.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname=".")
    with pytest.raises(ApiError) as info:
        await plane.push(archive, model_name=None, publish=True, promote=False)
    assert info.value.status == 422
    assert info.value.payload["detail"][0]["value"] == "model/model.py"
    assert plane.registry.models == {} and not list((plane.data_dir / "packages").iterdir())


async def test_package_without_config_yaml_names_it_not_a_server_path(plane: ControlPlane, tmp_path: Path) -> None:
    import tarfile

    root = tmp_path / "noconfig" / "model"
    root.mkdir(parents=True)
    (root / "model.py").write_text("class Model: ...\n")
    archive = tmp_path / "noconfig.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root.parent, arcname=".")
    with pytest.raises(ApiError) as info:
        await plane.push(archive, model_name="m", publish=True, promote=False)
    assert info.value.status == 422
    assert str(plane.data_dir) not in str(info.value.payload)


async def test_push_unpacks_off_the_event_loop(
    plane: ControlPlane, make_archive: MakeArchive, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A package with gigabytes of weights takes seconds to extract; on the
    # loop that would stall every predict request meanwhile.
    import threading

    from swell.control import _lifecycle as _plane

    threads: list[bool] = []
    unpack = _plane._unpack

    def spy(archive: Path, package_dir: Path) -> None:
        threads.append(threading.current_thread() is threading.main_thread())
        unpack(archive, package_dir)

    monkeypatch.setattr(_plane, "_unpack", spy)
    await plane.push(make_archive(), model_name="m", publish=True, promote=False)
    assert threads == [False]


async def test_a_deactivated_deployment_has_no_replicas_and_says_so(
    plane: ControlPlane, backend: FakeBackend, make_archive: MakeArchive
) -> None:
    pushed = await published_and_ready(plane, backend, make_archive, min_replica=1)
    view = await plane.lifecycle.deactivate("m", pushed.deployment_id)
    await settle()
    assert view["status"] == "Inactive" and backend.alive(pushed.deployment_id) == []
    with pytest.raises(ApiError) as info:
        plane.router("m", "environments", "production")
    assert info.value.status == 409 and "activate" in info.value.payload["reason"]
    view = await plane.lifecycle.activate("m", pushed.deployment_id)
    await plane.controller.tick()
    await settle()
    assert view["active"] and len(backend.alive(pushed.deployment_id)) == 1  # back to min_replica


async def test_deleting_what_an_environment_points_at_is_refused(plane: ControlPlane, make_archive: MakeArchive) -> None:
    first = await plane.push(make_archive(), model_name="m", publish=True, promote=False)
    with pytest.raises(ApiError) as info:
        await plane.lifecycle.delete_deployment("m", first.deployment_id)
    assert info.value.status == 409 and info.value.payload["environments"] == ["production"]
    second = await plane.push(make_archive(), model_name="m", publish=True, promote=False)
    await plane.lifecycle.delete_deployment("m", second.deployment_id)
    with pytest.raises(NotFound):
        plane.router("m", "deployment", second.deployment_id)
    await plane.lifecycle.delete_model("m")
    with pytest.raises(NotFound):
        plane.registry.model("m")


async def test_a_failed_development_build_is_replaced_by_the_next_good_push(
    plane: ControlPlane, make_archive: MakeArchive, monkeypatch: pytest.MonkeyPatch
) -> None:
    import swell.control._lifecycle as plane_module
    from swell.modelserver import RequirementsInstallError

    def broken(*_args: Any, **_kwargs: Any) -> Path:
        raise RequirementsInstallError(["nosuchpackage==0"], "ERROR: No matching distribution found for nosuchpackage==0")

    monkeypatch.setattr(plane_module, "ensure_environment", broken)
    with pytest.raises(ApiError) as info:
        await plane.push(make_archive({"model_name": "m", "requirements": ["nosuchpackage==0"]}), model_name=None, publish=False, promote=False)
    assert info.value.status == 422 and "nosuchpackage" in info.value.payload["reason"]
    failed = info.value.payload["deployment_id"]
    assert plane.registry.deployments[failed].build.value == "failed"
    good = await plane.push(make_archive(), model_name="m", publish=False, promote=False)
    model = plane.registry.model("m")
    assert model.development == good.deployment_id and failed not in plane.registry.deployments
    assert model.deployments == [good.deployment_id]


async def test_concurrent_first_publishes_leave_production_on_one_of_them(
    plane: ControlPlane, make_archive: MakeArchive
) -> None:
    archives = [make_archive({"model_name": "race"}) for _ in range(8)]
    results = await asyncio.gather(*(plane.push(a, model_name=None, publish=True, promote=False) for a in archives))
    model = plane.registry.model("race")
    production = model.environments["production"]
    assert production is not None and production in plane.registry.deployments
    assert [r.deployment_id for r in results if r.environment == "production"] == [production]
    assert plane.router("race", "environments", "production").deployment_id == production
    assert len(model.deployments) == 8


async def test_concurrent_development_pushes_answer_only_deployments_that_exist(
    plane: ControlPlane, make_archive: MakeArchive
) -> None:
    archives = [make_archive({"model_name": "devrace"}) for _ in range(6)]
    results = await asyncio.gather(*(plane.push(a, model_name=None, publish=False, promote=False) for a in archives))
    model = plane.registry.model("devrace")
    assert {r.deployment_id for r in results} == {model.development} == set(model.deployments)
    record = plane.registry.deployments[model.development]
    assert record.revision == 6 and plane.controller.get(record.id) is not None
    assert len({r.deployment_id for r in results}) == 1


async def test_a_model_may_not_be_named_with_another_models_id(plane: ControlPlane, make_archive: MakeArchive) -> None:
    first = await plane.push(make_archive(), model_name="first", publish=True, promote=False)
    with pytest.raises(ApiError) as info:
        await plane.push(make_archive(), model_name=first.model_id, publish=True, promote=False)
    assert info.value.status == 422
    assert info.value.payload["detail"] == [
        {"field": "model_name", "value": first.model_id, "allowed": "a name that is not another model's id"}
    ]
    with pytest.raises(ApiError) as info:
        await plane.lifecycle.create_model(first.model_id)
    assert info.value.status == 422
    assert [m.name for m in plane.registry.models.values()] == ["first"]


async def test_a_build_command_for_an_image_is_refused_and_nothing_is_created(
    plane: ControlPlane, make_archive: MakeArchive
) -> None:
    config = {"model_name": "m", "build_commands": ["pip --version", "sudo apt-get install -y ffmpeg"]}
    with pytest.raises(ApiError) as info:
        await plane.push(make_archive(config), model_name=None, publish=True, promote=False)
    assert info.value.status == 422 and info.value.payload["error"] == "build command not supported"
    assert info.value.payload["detail"][0]["field"] == "build_commands.1"
    assert plane.registry.models == {} and plane.registry.deployments == {}
    assert not any((plane.settings.data_dir / "packages").iterdir())


async def test_a_failing_build_command_is_422_with_its_output_and_a_failed_deployment(
    plane: ControlPlane, make_archive: MakeArchive
) -> None:
    config = {"model_name": "m", "build_commands": ["echo preparing", "haha lol"]}
    with pytest.raises(ApiError) as info:
        await plane.push(make_archive(config), model_name=None, publish=True, promote=False)
    payload = info.value.payload
    assert info.value.status == 422 and payload["error"] == "build command failed" and payload["status"] == "Failed"
    assert payload["build_command"]["index"] == 1 and payload["build_command"]["exit_code"] == 127
    assert "haha: command not found" in payload["build_command"]["output"]
    record = plane.registry.deployments[payload["deployment_id"]]
    assert "haha lol" in (record.error or "") and plane.views.deployment_view(record)["status"] == "Failed"
    assert plane.registry.model("m").environments["production"] is None  # never promoted


async def test_a_build_command_naming_an_image_folder_is_pushed_with_a_warning(
    plane: ControlPlane, make_archive: MakeArchive
) -> None:
    config = {"model_name": "m", "build_commands": ["ls -d /usr/local/lib > data.txt"]}
    result = await plane.push(make_archive(config), model_name=None, publish=True, promote=False)
    assert any("build_commands[0]" in w and "/usr/local" in w for w in result.warnings)
    record = plane.registry.deployments[result.deployment_id]
    assert (record.package_dir / "data.txt").read_text().strip() == "/usr/local/lib"
    assert "/envs/builds/" in (record.python or "")
