"""``cpworker local`` as a real process: it says where it listens, serves, and stops cleanly."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from cpw_local_lab import local_process


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_local_prints_its_endpoint_serves_and_stops_on_signal(stop_signal: int) -> None:
    with local_process() as (process, ready, port):
        assert ready == f"cpworker local ready at http://127.0.0.1:{port}"
        options = {
            "endpoint_url": f"http://127.0.0.1:{port}",
            "region_name": "us-east-1",
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }
        codepipeline = boto3.client("codepipeline", **options)
        listed = codepipeline.list_action_types(actionOwnerFilter="AWS")["actionTypes"]
        assert {"category": "Source", "owner": "AWS", "provider": "S3", "version": "1"} in [
            t["id"] for t in listed
        ]
        boto3.client("s3", **options).create_bucket(Bucket="cli-smoke")
        process.send_signal(stop_signal)
        assert process.wait(timeout=15) == 0
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, "the port is released"


def test_local_refuses_a_non_loopback_host() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cpworker.cli", "local", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "cpworker local listens on loopback only" in done.stderr


def test_local_injects_the_faults_it_is_given() -> None:
    faults = ("--faults", "throttle=1,ops=ListPipelines,seed=1", "--credential-ttl", "600")
    with local_process(*faults) as (process, ready, port):
        assert ready.startswith("cpworker local ready at")
        codepipeline = boto3.client(
            "codepipeline",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"total_max_attempts": 1}),
        )
        with pytest.raises(ClientError) as raised:
            codepipeline.list_pipelines()
        assert raised.value.response["Error"]["Code"] == "ThrottlingException"
        assert "actionTypes" in codepipeline.list_action_types()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("throttle=2", "fault probabilities must be between 0 and 1"),
        ("ops=PollForJob", "unknown operation(s) PollForJob"),
        ("slow=0.1", "'slow' is not a fault setting"),
        ("latency=61", "latency must be between 0 and 60 seconds"),
    ],
)
def test_local_refuses_a_bad_fault_spec(spec: str, message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cpworker.cli", "local", "--faults", spec],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert f"argument --faults: {message}" in done.stderr
