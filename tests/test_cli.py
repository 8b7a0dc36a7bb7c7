"""The command line parses what the README documents, and answers each user mistake with
one line that names the fix and a non-zero exit, from the real ``cpworker`` process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from cpworker.cli import parser
from cpworker.local.server import LocalCodePipeline

pytestmark = pytest.mark.e2e
AWS_CLI = Path(sys.executable).parent / "aws"
CLOSED_PORT_URL = "http://127.0.0.1:9"  # discard: nothing listens there

APP = """
from pydantic import BaseModel
from cpworker import ActionApp, Job, prop

class Config(BaseModel):
    Target: str = prop(description="What to check.", queryable=True)
    ReportName: str = "report"

app = ActionApp()

@app.action(category="Test", provider="{provider}", config=Config, inputs=(0, 1), outputs=(0, 0))
def check(job: Job[Config]) -> None: ...
"""


def test_serve_options() -> None:
    args = parser().parse_args(
        ["serve", "handlers.build:app", "--action", "build", "--concurrency", "8",
         "--query", "build:ProjectName=web", "--drain-timeout", "5", "--log-level", "DEBUG"]
    )  # fmt: skip
    assert args.app == "handlers.build:app"
    assert args.action == ["build"]
    assert args.concurrency == 8
    assert list(args.query) == [("build", {"ProjectName": "web"})]
    assert args.drain_timeout == 5.0
    assert args.log_level == "DEBUG"


@pytest.mark.parametrize("query", ["ProjectName=web", "build:ProjectName", "build:=web"])
def test_malformed_query_is_refused(query: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(["serve", "m:app", "--query", query])
    assert exited.value.code == 2
    assert "expected ACTION:Property=value" in capsys.readouterr().err


def cpworker(
    *args: str, cwd: Path, env: dict[str, str | None] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real ``cpworker`` process, run to its end (``env``: None removes a variable)."""
    environment = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true"}
    for name, value in (env or {}).items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    return subprocess.run(
        [sys.executable, "-m", "cpworker.cli", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def one_line(done: subprocess.CompletedProcess[str], status: int = 2) -> str:
    """The process's only stderr line, once it exited with ``status``."""
    assert done.returncode == status, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's folder with ``checks.py``: one action of a fresh provider, queryable."""
    (tmp_path / "checks.py").write_text(APP.format(provider=f"Chk{uuid.uuid4().hex[:8]}"))
    return tmp_path


def _provider(project: Path) -> str:
    text = (project / "checks.py").read_text()
    return text.split('provider="', 1)[1].split('"', 1)[0]


def _endpoint(local: LocalCodePipeline) -> tuple[str, str]:
    return "--endpoint-url", local.endpoint_url


@pytest.mark.parametrize("command", ["serve", "register"])
def test_a_module_typo_is_one_line(command: str, project: Path) -> None:
    line = one_line(cpworker(command, "chekcs:app", cwd=project))
    assert line == (
        f"cpworker {command}: no module named 'chekcs' in {project}: check the spelling, and "
        "run from the directory that holds it (or add that directory to PYTHONPATH)"
    )


def test_a_missing_attribute_is_named_with_the_apps_there(project: Path) -> None:
    line = one_line(cpworker("serve", "checks:ap", cwd=project))
    assert line == (
        "cpworker serve: checks:ap: checks has no attribute 'ap' (ActionApps in it: app); "
        "give MODULE:APP"
    )


def test_an_error_in_the_users_module_is_one_line_with_its_place(project: Path) -> None:
    (project / "broken.py").write_text("import os\nvalue = 1 / 0\n")
    line = one_line(cpworker("register", "broken:app", "--dry-run", cwd=project))
    assert line == (
        "cpworker register: importing broken failed: ZeroDivisionError: division by zero "
        f"({project / 'broken.py'}:2)"
    )


def test_an_unknown_action_is_one_line(project: Path) -> None:
    line = one_line(cpworker("serve", "checks:app", "--action", "chek", cwd=project))
    assert line == "cpworker serve: --action: no action named 'chek' (known: check)"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("chek:Target=alpha", "no served action is named 'chek' (served: check); ACTION is the "
         "action's name, as in --action"),
        ("check:ReportName=x", "'ReportName' is not queryable; action 'check' can be polled by "
         "'Target' only"),
    ],
)  # fmt: skip
def test_a_query_that_cannot_filter_is_refused_at_start(
    query: str, message: str, project: Path
) -> None:
    line = one_line(cpworker("serve", "checks:app", "--query", query, cwd=project))
    assert line == f"cpworker serve: --query {query}: {message}"


def test_serve_refuses_a_queryable_type_without_query(project: Path) -> None:
    line = one_line(cpworker("serve", "checks:app", cwd=project))
    assert line == (
        "cpworker serve: action 'check' has the queryable property 'Target', and CodePipeline "
        "polls such a type only with a value: add --query check:Target=VALUE"
    )


def test_serve_loads_an_app_from_a_file_path(project: Path) -> None:
    (project / "elsewhere").mkdir()
    line = one_line(cpworker("serve", "../checks.py:app", cwd=project / "elsewhere"))
    assert "add --query check:Target=VALUE" in line, "the app was loaded from its file"


def test_no_region_is_one_line(project: Path, local: LocalCodePipeline) -> None:
    done = cpworker(
        "register", "checks:app", *_endpoint(local), cwd=project,
        env={"AWS_DEFAULT_REGION": None, "AWS_REGION": None},
    )  # fmt: skip
    assert one_line(done) == (
        "cpworker register: no AWS Region: give --region, or set AWS_DEFAULT_REGION "
        "(or region in the profile)"
    )


def test_no_credentials_is_one_line(project: Path, local: LocalCodePipeline) -> None:
    done = cpworker(
        "serve", "checks:app", "--query", "check:Target=a", *_endpoint(local), cwd=project,
        env={"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_SESSION_TOKEN": None},
    )  # fmt: skip
    assert one_line(done).startswith(
        "cpworker serve: Unable to locate credentials: set AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY, or a profile"
    )


def test_serve_gives_up_on_an_unreachable_endpoint_after_a_few_attempts(project: Path) -> None:
    done = cpworker(
        "serve", "checks:app", "--query", "check:Target=a", "--endpoint-url", CLOSED_PORT_URL,
        cwd=project,
    )  # fmt: skip
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    retries = [line for line in done.stderr.splitlines() if '"message":"Retrying' in line]
    assert len(retries) == 3, "four attempts in all, then one line"
    assert done.stderr.strip().splitlines()[-1] == (
        f'cpworker serve: Could not connect to the endpoint URL: "{CLOSED_PORT_URL}/": is '
        "cpworker local (or your endpoint) running? check --endpoint-url"
    )


def test_register_without_an_endpoint_and_no_network_is_one_line(project: Path) -> None:
    # AWS itself is out of reach: a proxy that refuses stands for "no network"
    done = cpworker(
        "register", "checks:app", cwd=project,
        env={"AWS_ENDPOINT_URL": None, "HTTPS_PROXY": CLOSED_PORT_URL, "NO_PROXY": None},
    )  # fmt: skip
    assert one_line(done) == (
        f'cpworker register: Failed to connect to proxy URL: "{CLOSED_PORT_URL}": no network? '
        "To use a cpworker local, give --endpoint-url or set AWS_ENDPOINT_URL"
    )


def test_register_reports_a_model_change_and_bumps_the_version(
    project: Path, local: LocalCodePipeline
) -> None:
    provider = _provider(project)
    created = cpworker("register", "checks:app", *_endpoint(local), cwd=project)
    assert created.stdout == f"created custom action type Test/Custom/{provider}/1\n"
    again = cpworker("register", "checks:app", *_endpoint(local), cwd=project)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")

    # When the model gains a property and loses its report name's default
    source = (project / "checks.py").read_text()
    source = source.replace('ReportName: str = "report"', "ReportName: str\n    Depth: int = 2")
    (project / "checks.py").write_text(source)

    # Then register says exactly what differs, and fails
    assert one_line(cpworker("register", "checks:app", *_endpoint(local), cwd=project), 1) == (
        f"cpworker register: Test/Custom/{provider}/1 differs from the declaration of action "
        "'check': property 'Depth' is declared but not registered; property 'ReportName': "
        "required is True in the code, False registered; property 'ReportName': key is True "
        "in the code, False registered. Action types cannot be edited: register the "
        "declaration as the next version with --bump"
    )
    # and --bump registers the next version, once
    bumped = cpworker("register", "checks:app", "--bump", *_endpoint(local), cwd=project)
    assert bumped.returncode == 0, bumped.stderr
    rollover = (
        f"Test/Custom/{provider}/2 matches the declaration of action 'check': set "
        'version="2" in its @app.action so that serve polls it, then move pipelines to it '
        "(README: Rolling pipelines over to a new version)\n"
    )
    assert bumped.stdout == f"created custom action type Test/Custom/{provider}/2\n{rollover}"
    again = cpworker("register", "checks:app", "--bump", *_endpoint(local), cwd=project)
    assert again.stdout == rollover

    listed = cpworker("action-types", "checks:app", *_endpoint(local), cwd=project)
    assert listed.returncode == 0, listed.stderr
    mine = [line for line in listed.stdout.splitlines() if f"/{provider}/" in line]
    assert mine == [
        f"Test/Custom/{provider}/1\tdiffers from action 'check': property 'Depth' is declared "
        "but not registered; property 'ReportName': required is True in the code, False "
        "registered; property 'ReportName': key is True in the code, False registered",
        f"Test/Custom/{provider}/2\tanother version (action 'check' declares 1)",
    ]

    # and unregister deletes an old version
    deleted = cpworker("unregister", "checks:app", "--version", "1", *_endpoint(local), cwd=project)
    assert deleted.stdout == f"deleted custom action type Test/Custom/{provider}/1\n"
    missing = cpworker("unregister", "checks:app", "--version", "1", *_endpoint(local), cwd=project)
    assert one_line(missing, 1) == (
        f"cpworker unregister: Test/Custom/{provider}/1 is not registered"
    )
    cpworker("unregister", "checks:app", "--version", "2", *_endpoint(local), cwd=project)


def test_dry_run_prints_what_the_aws_cli_registers(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    printed = cpworker("register", "handlers.build:app", "--dry-run", cwd=root)
    assert printed.returncode == 0, printed.stderr
    (tmp_path / "build.json").write_text(printed.stdout)
    with LocalCodePipeline() as fresh:  # its own, where CpworkerBuild/1 does not exist yet
        done = subprocess.run(
            [str(AWS_CLI), "codepipeline", "create-custom-action-type", "--cli-input-json",
             f"file://{tmp_path / 'build.json'}", "--endpoint-url", fresh.endpoint_url,
             "--region", "us-east-1", "--output", "json"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["actionType"]["id"]["provider"] == "CpworkerBuild"
        # and what the AWS CLI registered is exactly the declaration
        again = cpworker(
            "register", "handlers.build:app", "--endpoint-url", fresh.endpoint_url, cwd=root
        )
        assert (again.returncode, again.stdout, again.stderr) == (0, "", "")


def test_serve_warns_at_start_when_a_served_type_differs(
    project: Path, local: LocalCodePipeline
) -> None:
    created = cpworker("register", "checks:app", *_endpoint(local), cwd=project)
    assert created.returncode == 0, created.stderr
    source = (project / "checks.py").read_text()
    (project / "checks.py").write_text(source.replace("inputs=(0, 1)", "inputs=(1, 1)"))
    process = subprocess.Popen(
        [sys.executable, "-m", "cpworker.cli", "serve", "checks:app", "--query",
         "check:Target=a", *_endpoint(local), "--state-dir", str(project / "state")],
        cwd=project, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        lines = []
        for line in process.stderr:  # until the worker says it started
            lines.append(json.loads(line))
            if lines[-1]["message"] == "worker started":
                break
        (warning,) = [line for line in lines if line["level"] == "WARNING"]
        assert warning["message"].startswith("the registered action type differs")
        assert warning["differences"] == [
            "inputs (min, max) are (1, 1) in the code, (0, 1) registered"
        ]
        found = [line for line in lines if line["message"].startswith("Found credentials")]
        assert not found, "botocore's INFO lines stay out at the default level"
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)


def test_serve_refuses_a_type_that_is_not_registered(
    project: Path, local: LocalCodePipeline
) -> None:
    done = cpworker(
        "serve", "checks:app", "--query", "check:Target=a", *_endpoint(local), cwd=project
    )
    assert one_line(done) == (
        f"cpworker serve: action type Test/Custom/{_provider(project)}/1 (action 'check') is "
        "not registered in us-east-1: run cpworker register first, or serve with --register"
    )
    listed = cpworker("action-types", "checks:app", *_endpoint(local), cwd=project)
    assert f"Test/Custom/{_provider(project)}/1\tnot registered (action 'check')\n" in (
        listed.stdout
    )


def test_help_names_every_command_and_says_what_each_option_does(project: Path) -> None:
    top = cpworker("--help", cwd=project).stdout
    for command in ("serve", "register", "unregister", "action-types", "local", "invoke"):
        assert f"    {command}" in top
    assert "register only this action" in cpworker("register", "--help", cwd=project).stdout
    local_help = " ".join(cpworker("local", "--help", cwd=project).stdout.split())
    assert "--port PORT the port to listen on (4566)" in local_help
    assert "--host HOST a loopback address (127.0.0.1)" in local_help


def test_invoke_says_in_one_line_that_an_app_of_two_actions_needs_a_name(tmp_path: Path) -> None:
    (tmp_path / "two.py").write_text(
        "from cpworker import ActionApp, lambda_handler\napp = ActionApp()\n"
        "@app.action(category='Invoke', provider='One')\ndef one(job): ...\n"
        "@app.action(category='Invoke', provider='Two')\ndef two(job): ...\n"
        "handler = lambda_handler(app)\n"
    )
    done = cpworker("invoke", "two:handler", "--build-event", cwd=tmp_path)
    assert one_line(done) == (
        "cpworker invoke: two:handler: the app has 2 actions (one, two): "
        "name one, as in lambda_handler(app, 'build')"
    )


def test_invoke_names_invalid_user_parameters_json_and_where_outputs_went(
    tmp_path: Path,
) -> None:
    root = Path(__file__).resolve().parents[1]
    (tmp_path / "build.sh").write_text("mkdir -p dist && echo ok > dist/out.txt\n")
    parameters = '{"ProjectName": "cli", "Command": "sh build.sh", "OutputDirectory": "dist"}'
    common = ("invoke", "handlers.build:handler", "--build-event", "--output", "BuildOutput")
    common += ("--input", f"SourceOutput={tmp_path}")
    bad = cpworker(*common, "--user-parameters", parameters[:-1], cwd=root)
    assert bad.returncode == 1
    failure = json.loads(bad.stdout.split("\n}\n")[0] + "}")["result"]["failureDetails"]
    assert failure["message"] == (
        "UserParameters is not valid JSON (Expecting ',' delimiter: line 1 column 75 (char 74))"
        ": give a JSON object with ProjectName, Command, OutputDirectory, TimeoutSeconds"
    )

    good = cpworker(*common, "--user-parameters", parameters, cwd=root)
    assert good.returncode == 0, good.stderr
    documents, decoder, text = [], json.JSONDecoder(), good.stdout.strip()
    while text:
        document, end = decoder.raw_decode(text)
        documents.append(document)
        text = text[end:].strip()
    assert [d.get("status") for d in documents if "step" in d] == ["Continued", "Succeeded"]
    (output,) = documents[-1]["outputArtifacts"]
    assert output["name"] == "BuildOutput"
    assert output["location"].startswith("s3://cpworker-invoke/")
    assert output["location"].endswith("/outputs/BuildOutput.zip")
    assert (output["uploaded"], output["serverSideEncryption"]) == (True, "aws:kms")
    assert output["size"] > 0
