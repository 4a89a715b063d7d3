"""The client commands of `scriptgen` against a real core, run in-process by `run(argv)`:
what they print on stdout and stderr, their JSON, their exit status, their error lines."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import pytest
from scriptgen import Client
from scriptgen.cli import main, run
from scriptgen.cli._names import episode_name, generation_name, project_name
from scriptgen.cli._options import EnvSwitch
from scriptgen.v1 import generation_pb2, project_pb2

#: Runs `scriptgen ARGS...` and returns (exit status, stdout, stderr).
Run = Callable[..., Awaitable[tuple[int, str, str]]]


@pytest.fixture
def scriptgen(core_target: str, capsys: pytest.CaptureFixture[str]) -> Run:
    async def invoke(*argv: str, target: str | None = core_target) -> tuple[int, str, str]:
        capsys.readouterr()
        args: Sequence[str] = [*argv, "--target", target] if target else list(argv)
        # run() is main() in this loop: one event loop per process keeps grpc.aio happy.
        status = await asyncio.wait_for(run(args), timeout=60)
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return invoke


async def test_projects_create_show_update_list_delete(scriptgen: Run, client: Client) -> None:
    status, out, err = await scriptgen(
        "projects",
        "create",
        "--title",
        "Salt and Iron",
        "--type",
        "web-series",
        "--logline",
        "Two rival blacksmiths share one forge.",
        "--language",
        "ko",
        "--id",
        "salt-and-iron",
    )
    assert (status, out, err) == (0, "projects/salt-and-iron\n", "")
    project = await client.get_project("projects/salt-and-iron")
    assert project.type == project_pb2.PROJECT_TYPE_WEB_SERIES
    assert project.language == "ko"

    status, out, _ = await scriptgen("projects", "show", "salt-and-iron")
    assert status == 0
    assert out.splitlines()[0] == "projects/salt-and-iron"
    assert "title:       Salt and Iron" in out
    assert "type:        web-series" in out

    status, out, _ = await scriptgen("projects", "update", "salt-and-iron", "--title", "Salt")
    assert status == 0
    assert (await client.get_project(project.name)).title == "Salt"
    assert (await client.get_project(project.name)).logline == project.logline

    status, out, _ = await scriptgen("projects", "list")
    assert status == 0
    header, row = out.splitlines()
    assert header.split() == ["NAME", "TYPE", "EPISODES", "CREATED", "TITLE"]
    assert row.split()[:3] == ["projects/salt-and-iron", "web-series", "0"]
    assert row.endswith("Salt")

    status, out, _ = await scriptgen("projects", "list", "--json")
    assert status == 0
    listed = json.loads(out)
    assert [entry["name"] for entry in listed["projects"]] == ["projects/salt-and-iron"]
    assert listed["projects"][0]["type"] == "PROJECT_TYPE_WEB_SERIES"

    status, out, _ = await scriptgen("projects", "delete", "projects/salt-and-iron")
    assert (status, out) == (0, "deleted projects/salt-and-iron\n")
    assert list((await client.list_projects()).projects) == []


async def test_projects_create_json_is_the_project_in_proto3_json(
    scriptgen: Run,
) -> None:
    status, out, _ = await scriptgen("projects", "create", "--title", "Glass", "--json")
    assert status == 0
    created = json.loads(out)
    assert created["title"] == "Glass"
    assert created["name"].startswith("projects/")
    assert "createTime" in created


async def test_generate_streams_the_script_to_stdout_and_progress_to_stderr(
    scriptgen: Run, client: Client, project: project_pb2.Project
) -> None:
    status, out, err = await scriptgen(
        "generate", project.name, "--title", "Pilot", "--description", "A diary washes ashore."
    )
    assert status == 0, err
    episodes = list((await client.list_episodes(project.name)).episodes)
    assert len(episodes) == 1
    episode = await client.get_episode(episodes[0].name)
    assert out.rstrip("\n") == episode.script.rstrip("\n")
    assert "queued generations/" in err
    assert "» write" in err
    assert f"saved {episode.name}: episode 1" in err

    status, out, err = await scriptgen("episodes", "show", episode.name)
    assert status == 0
    assert out == episode.script if episode.script.endswith("\n") else episode.script + "\n"
    assert episode.name in err

    number = episode.name.rsplit("/", 1)[1]
    short = project.name.removeprefix("projects/") + "/" + number
    status, out, _ = await scriptgen("episodes", "show", short, "--json")
    assert status == 0
    assert json.loads(out)["script"] == episode.script

    status, out, _ = await scriptgen("episodes", "list", project.name)
    assert status == 0
    assert out.splitlines()[1].split()[:2] == [episode.name, "1"]


async def test_generate_json_writes_one_event_per_line_in_sequence(
    scriptgen: Run, project: project_pb2.Project
) -> None:
    status, out, err = await scriptgen("generate", project.name, "--title", "Pilot", "--json")
    assert status == 0
    assert err == ""
    events = [json.loads(line) for line in out.splitlines()]
    assert [int(event["sequence"]) for event in events] == list(range(1, len(events) + 1))
    assert "queued" in events[0]
    assert "completed" in events[-1]
    script = "".join(event["textDelta"]["text"] for event in events if "textDelta" in event)
    assert script == events[-1]["completed"]["episode"]["script"]


async def test_generations_list_show_follow_cancel(
    scriptgen: Run, client: Client, project: project_pb2.Project
) -> None:
    async with client.generate(project.name, "Pilot") as stream:
        result = await stream.collect()
    job = result.generation

    status, out, _ = await scriptgen("generations", "list", "--project", project.name)
    assert status == 0
    assert out.splitlines()[1].split()[:3] == [job, "succeeded", project.name]

    status, out, _ = await scriptgen("generations", "list", "--json")
    assert status == 0
    assert [entry["name"] for entry in json.loads(out)["generations"]] == [job]

    status, out, _ = await scriptgen("generations", "show", job)
    assert status == 0
    assert "state:   succeeded" in out
    assert result.episode is not None
    assert f"episode: {result.episode.name}" in out

    status, out, err = await scriptgen("generations", "follow", job, "--quiet")
    assert status == 0
    assert err == ""
    assert out.rstrip("\n") == result.script.rstrip("\n")

    status, out, _ = await scriptgen("generations", "follow", job, "--after", "3", "--json")
    assert status == 0
    assert int(json.loads(out.splitlines()[0])["sequence"]) == 4

    status, out, _ = await scriptgen("generations", "cancel", job, "--json")
    assert status == 0
    assert json.loads(out)["state"] == "GENERATION_STATE_SUCCEEDED"


async def test_generate_exits_1_when_the_job_is_cancelled(
    slow_target: str, slow_client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    project = await slow_client.create_project(title="Cut Short")
    argv = ["generate", project.name, "--title", "Pilot", "--target", slow_target]
    command = asyncio.create_task(run(argv))
    async with asyncio.timeout(20):
        jobs: list[generation_pb2.Generation] = []
        while not jobs:
            await asyncio.sleep(0.05)
            jobs = list((await slow_client.list_generations(project.name)).generations)
        await slow_client.cancel_generation(jobs[0].name)
        status = await command
    err = capsys.readouterr().err
    assert status == 1
    assert "scriptgen: job cancelled: cancelled by request" in err
    job = await slow_client.get_generation(jobs[0].name)
    assert job.state == generation_pb2.GENERATION_STATE_CANCELLED


async def test_a_bad_request_is_one_error_line_with_its_field_violations(scriptgen: Run) -> None:
    status, out, err = await scriptgen("projects", "create", "--title", "", "--language", "??")
    assert status == 1
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("scriptgen: error: INVALID_ARGUMENT: ")
    assert "[FIELD_INVALID]" in err
    assert "project.title: " in err
    assert "project.language: " in err
    assert "Traceback" not in err


async def test_an_unknown_provider_is_one_error_line_naming_the_metadata_key(
    scriptgen: Run, project: project_pb2.Project
) -> None:
    status, out, err = await scriptgen(
        "generate", project.name, "--title", "Pilot", "--provider", "quill-9000"
    )
    assert (status, out) == (1, "")
    assert err.startswith("scriptgen: error: INVALID_ARGUMENT: ")
    assert "x-preferred-provider: unknown provider 'quill-9000'" in err
    assert err.count("\n") == 1


async def test_a_missing_resource_is_one_not_found_line(scriptgen: Run) -> None:
    status, out, err = await scriptgen("episodes", "show", "projects/nowhere/episodes/1")
    assert (status, out) == (1, "")
    assert err.startswith("scriptgen: error: NOT_FOUND: ")
    assert err.count("\n") == 1


async def test_an_unreachable_core_is_one_unavailable_line(
    scriptgen: Run, unused_tcp_port: int
) -> None:
    target = f"127.0.0.1:{unused_tcp_port}"
    status, _, err = await scriptgen("projects", "list", "--deadline", "2", target=target)
    assert status == 1
    assert err.startswith("scriptgen: error: UNAVAILABLE: ")
    assert f"(is the core running at {target}?)" in err
    assert err.count("\n") == 1


async def test_flags_default_to_scriptgen_environment_variables(
    scriptgen: Run, core_target: str, project: project_pb2.Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCRIPTGEN_CORE_TARGET", core_target)
    monkeypatch.setenv("SCRIPTGEN_JSON", "1")
    status, out, _ = await scriptgen("projects", "list", target=None)
    assert status == 0
    assert [entry["name"] for entry in json.loads(out)["projects"]] == [project.name]


def test_usage_errors_exit_2_with_argparse_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["projects", "create"])
    assert raised.value.code == 2
    assert "--title" in capsys.readouterr().err
    with pytest.raises(SystemExit) as raised:
        main(["projects", "show", "projects/a/b"])
    assert raised.value.code == 2
    assert "not a project name" in capsys.readouterr().err
    with pytest.raises(SystemExit) as raised:
        main(["projects", "list", "--bogus"])
    assert raised.value.code == 2


def test_update_without_a_field_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["projects", "update", "p", "--target", "127.0.0.1:1"]) == 2
    assert "nothing to change" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["serve", "server", "gateway"])
def test_process_commands_describe_their_flags(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as raised:
        main([command, "--help"])
    assert raised.value.code == 0
    usage = capsys.readouterr().out
    assert f"scriptgen {command}" in usage
    if command in ("serve", "server"):
        assert "--grpc-address" in usage
        assert "SCRIPTGEN_DATA_DIR" in usage
    if command in ("serve", "gateway"):
        assert "--http-address" in usage


@pytest.mark.parametrize(
    ("parse", "typed", "name"),
    [
        (project_name, "salt", "projects/salt"),
        (project_name, "projects/salt", "projects/salt"),
        (episode_name, "salt/3", "projects/salt/episodes/3"),
        (episode_name, "projects/salt/episodes/3", "projects/salt/episodes/3"),
        (generation_name, "g123", "generations/g123"),
        (generation_name, "generations/g123", "generations/g123"),
    ],
)
def test_short_names_become_full_resource_names(
    parse: Callable[[str], str], typed: str, name: str
) -> None:
    assert parse(typed) == name


@pytest.mark.parametrize(
    ("parse", "typed"),
    [
        (project_name, ""),
        (project_name, "projects/a/b"),
        (episode_name, "salt"),
        (episode_name, "salt/x"),
    ],
)
def test_malformed_names_are_usage_errors(parse: Callable[[str], str], typed: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse(typed)


_NO_INT = "invalid int value: 'soon'"
_NO_FLOAT = "invalid float value: 'soon'"
_NO_SWITCH = "{variable}='soon' is not a switch"


@pytest.mark.parametrize(
    ("command", "variable", "flag", "message"),
    [
        ("server", "SCRIPTGEN_MAX_STREAMS", "--max-streams", _NO_INT),
        ("server", "SCRIPTGEN_PROVIDER_WORKERS", "--provider-workers", _NO_INT),
        ("server", "SCRIPTGEN_HEARTBEAT_SECONDS", "--heartbeat-seconds", _NO_FLOAT),
        (
            "server",
            "SCRIPTGEN_KNOWLEDGE_TIMEOUT_SECONDS",
            "--knowledge-timeout-seconds",
            _NO_FLOAT,
        ),
        ("gateway", "SCRIPTGEN_GATEWAY_WORKERS", "--workers", _NO_INT),
        ("serve", "SCRIPTGEN_MAX_STREAMS", "--max-streams", _NO_INT),
        ("projects list", "SCRIPTGEN_DEADLINE", "--deadline", _NO_FLOAT),
        # Switches: these were taken for off without a word.
        ("projects list", "SCRIPTGEN_JSON", "--json", _NO_SWITCH),
        ("generate p --title T", "SCRIPTGEN_DETACH", "--detach", _NO_SWITCH),
        ("generate p --title T", "SCRIPTGEN_QUIET", "--quiet", _NO_SWITCH),
        ("gateway", "SCRIPTGEN_REUSE_PORT", "--reuse-port", _NO_SWITCH),
        ("backup list", "SCRIPTGEN_JSON", "--json", _NO_SWITCH),
        ("backup list", "SCRIPTGEN_QUIET", "--quiet", _NO_SWITCH),
        ("keys list", "SCRIPTGEN_JSON", "--json", _NO_SWITCH),
        ("generations follow g1", "SCRIPTGEN_QUIET", "--quiet", _NO_SWITCH),
    ],
)
def test_a_bad_variable_is_a_usage_error_naming_its_flag(
    command: str,
    variable: str,
    flag: str,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A bad value in the environment is refused as the flag's would be, not a traceback."""
    monkeypatch.setenv(variable, "soon")
    with pytest.raises(SystemExit) as raised:
        main(command.split())
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: {message.format(variable=variable)}" in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("text", "on"),
    [
        *[("1", True), ("TRUE", True), (" yes ", True), ("On", True)],
        *[("", False), ("0", False), ("false", False), ("No", False), ("off", False)],
    ],
)
def test_switch_variables_take_the_usual_words_in_any_case(text: str, on: bool) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--json", action=EnvSwitch, variable="SCRIPTGEN_JSON", environ={"SCRIPTGEN_JSON": text}
    )
    assert parser.parse_args([]).json is on
    assert parser.parse_args(["--json"]).json is True  # the flag itself is always on


@pytest.mark.parametrize(
    ("command", "flag"),
    [
        ("projects list --page-size 3000000000", "--page-size"),
        ("projects list --page-size 1001", "--page-size"),
        ("episodes list p1 --page-size -1", "--page-size"),
        ("generations list --page-size 3000000000", "--page-size"),
        ("knowledge list p1 --page-size 3000000000", "--page-size"),
        ("projects create --title T --minutes 3000000000", "--minutes"),
        ("projects update p1 --minutes 181", "--minutes"),
        ("projects update p1 --minutes -1", "--minutes"),
        ("generations follow g1 --after 9223372036854775808", "--after"),
        ("generations follow g1 --after -1", "--after"),
        ("projects list --deadline 0", "--deadline"),
        ("projects list --deadline -5", "--deadline"),
        ("projects list --deadline nan", "--deadline"),
        ("projects list --deadline inf", "--deadline"),
        ("projects list --deadline 1e300", "--deadline"),
    ],
)
def test_numbers_out_of_range_are_usage_errors_naming_the_flag(
    capsys: pytest.CaptureFixture[str], command: str, flag: str
) -> None:
    """Refused before any call: not a traceback from protobuf (a page size of 3000000000
    is no int32) or from the client's own checks (`--deadline 0`)."""
    with pytest.raises(SystemExit) as raised:
        main([*command.split(), "--target", "127.0.0.1:1"])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: " in err, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("scriptgen ")  # argparse's one error line


@pytest.mark.parametrize("deadline", ["0", "nan", "-1"])
def test_a_deadline_variable_out_of_range_is_a_usage_error_naming_its_flag(
    deadline: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SCRIPTGEN_DEADLINE", deadline)
    with pytest.raises(SystemExit) as raised:
        main(["projects", "list", "--target", "127.0.0.1:1"])
    assert raised.value.code == 2
    assert "argument --deadline: must be more than 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--requests", "3000000000"),
        ("--window-seconds", "-1"),
        ("--max-streams", "2147483648"),
        ("--daily-tokens", "9223372036854775808"),
    ],
)
def test_tenant_limits_out_of_range_are_usage_errors(
    flag: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["keys", "limits", "acme", flag, value, "--data-dir", str(tmp_path)])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: must be between 0 and " in err, err
    assert "Traceback" not in err


async def test_numbers_in_range_still_reach_the_core(scriptgen: Run) -> None:
    status, _, err = await scriptgen("projects", "create", "--title", "T", "--minutes", "180")
    assert (status, err) == (0, "")
    status, _, err = await scriptgen("projects", "list", "--page-size", "1000", "--deadline", "5")
    assert (status, err) == (0, "")
