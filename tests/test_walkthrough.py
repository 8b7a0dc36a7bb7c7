"""README's walkthrough "Your own action against cpworker local" stays true: its module and
pipeline JSON, taken from README.md, go through the real CLI (``cpworker register``, the
AWS CLI's ``create-pipeline``, ``cpworker serve``) against a ``cpworker local`` process, and
the execution succeeds with the output variable and the output artifact."""

from __future__ import annotations

import io
import json
import os
import queue
import re
import subprocess
import sys
import threading
import zipfile
from pathlib import Path
from typing import IO

from local.cpw_local_lab import aws_cli, local_process

from cpworker.testing import endpoint_client, upload_source, zip_bytes

README = Path(__file__).resolve().parent.parent / "README.md"
CPWORKER = [sys.executable, "-m", "cpworker.cli"]
JOB_TIMEOUT_S = 30.0  # from the worker's start to the result: no interpreter start-up in it


def walkthrough_block(marker: str) -> str:
    """The fenced block right after ``<!-- walkthrough:MARKER -->`` in README.md."""
    found = re.search(
        rf"<!-- walkthrough:{marker} -->\n```\w+\n(.*?)\n```\n", README.read_text(), re.DOTALL
    )
    assert found, f"README.md has no walkthrough:{marker} block"
    return found.group(1) + "\n"


def lines_of(stream: IO[str]) -> queue.Queue[str | None]:
    """Each line of ``stream`` as it comes, then None at its end."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def wait_for_line(lines: queue.Queue[str | None], text: str, timeout_s: float | None) -> str:
    """The first line containing ``text``; AssertionError if the stream ends or times out."""
    seen = []
    while True:
        try:
            line = lines.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(f"no {text!r} in {timeout_s} s; log so far: {seen}") from None
        assert line is not None, f"the worker exited before {text!r}; its log: {seen}"
        if text in line:
            return line
        seen.append(line)


def test_walkthrough_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "greeter.py").write_text(walkthrough_block("module"))
    (tmp_path / "pipeline.json").write_text(walkthrough_block("pipeline"))
    name = json.loads(walkthrough_block("pipeline"))["pipeline"]["name"]

    with local_process(cwd=tmp_path) as (_local, ready, port):
        assert "ready" in ready
        endpoint = f"http://127.0.0.1:{port}"
        env = {**os.environ, "AWS_ENDPOINT_URL": endpoint}

        def cpworker(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*CPWORKER, *args], cwd=tmp_path, env=env, capture_output=True, text=True
            )

        dry = cpworker("register", "greeter:app", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert json.loads(dry.stdout)["provider"] == "Greeter"
        done = cpworker("register", "greeter:app")
        assert done.returncode == 0, done.stderr
        assert "created custom action type Build/Custom/Greeter/1" in done.stdout

        s3 = endpoint_client(endpoint, "s3")
        s3.create_bucket(Bucket="greeter-artifacts")
        files = {"alice.txt": "a\n", "bob.txt": "b\n"}
        upload_source(s3, "greeter-source", "src.zip", zip_bytes(files))
        code, answer, stderr = aws_cli(
            endpoint,
            "codepipeline",
            "create-pipeline",
            "--cli-input-json",
            f"file://{tmp_path / 'pipeline.json'}",
        )
        assert code == 0, stderr
        assert answer["pipeline"]["name"] == name

        worker = subprocess.Popen(
            [*CPWORKER, "serve", "greeter:app", "--log-format", "text"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert worker.stdout is not None
            log = lines_of(worker.stdout)
            wait_for_line(log, "worker started", timeout_s=None)  # start-up is not timed
            wait_for_line(log, "result reported", timeout_s=JOB_TIMEOUT_S)
        finally:
            worker.terminate()
            worker.wait()

        codepipeline = endpoint_client(endpoint, "codepipeline")
        execution_id = codepipeline.list_pipeline_executions(pipelineName=name)[
            "pipelineExecutionSummaries"
        ][0]["pipelineExecutionId"]
        execution = codepipeline.get_pipeline_execution(
            pipelineName=name, pipelineExecutionId=execution_id
        )["pipelineExecution"]
        assert execution["status"] == "Succeeded", execution
        details = codepipeline.list_action_executions(
            pipelineName=name, filter={"pipelineExecutionId": execution_id}
        )["actionExecutionDetails"]
        (greet,) = [d for d in details if d["actionName"] == "Greet"]
        assert greet["output"]["outputVariables"] == {"FileCount": "2"}
        assert greet["output"]["executionResult"]["externalExecutionSummary"] == (
            "HELLO, ALICE.TXT BOB.TXT!"
        )
        where = greet["output"]["outputArtifacts"][0]["s3location"]
        body = s3.get_object(Bucket=where["bucket"], Key=where["key"])["Body"].read()
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            assert archive.read("greeting.txt") == b"HELLO, ALICE.TXT BOB.TXT!\n"
