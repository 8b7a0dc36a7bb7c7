"""Custom action types on the local CodePipeline, via boto3 and via the real AWS CLI."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cpw_local_lab import Lab, aws_cli

from cpworker.local.server import LocalCodePipeline

EVENTS = Path(__file__).parent.parent / "events"


def guide_example(provider_suffix: str) -> dict[str, Any]:
    """The User Guide's create-custom-action-type example, with a unique provider."""
    example: dict[str, Any] = json.loads((EVENTS / "custom_action_type.json").read_text())
    example["provider"] = f"{example['provider']}-{provider_suffix}"
    return example


def delete(codepipeline: Any, definition: dict[str, Any]) -> None:
    codepipeline.delete_custom_action_type(
        category=definition["category"],
        provider=definition["provider"],
        version=definition["version"],
    )


def test_guide_example_via_boto3(aws: Callable[..., Any]) -> None:
    codepipeline = aws("codepipeline")
    example = guide_example(uuid.uuid4().hex[:8])

    answer = codepipeline.create_custom_action_type(**example)

    try:
        action_type = answer["actionType"]
        assert action_type["id"] == {
            "category": "Build",
            "owner": "Custom",
            "provider": example["provider"],
            "version": "1",
        }
        assert action_type["actionConfigurationProperties"][0]["name"] == "ProjectName"
        assert action_type["inputArtifactDetails"] == {"minimumCount": 1, "maximumCount": 1}
        assert answer["tags"] == [{"key": "Project", "value": "ProjectA"}]
        listed = codepipeline.list_action_types(actionOwnerFilter="Custom")["actionTypes"]
        assert action_type["id"] in [t["id"] for t in listed]
    finally:
        delete(codepipeline, example)


def test_guide_example_via_aws_cli(
    local: LocalCodePipeline, aws: Callable[..., Any], tmp_path: Path
) -> None:
    example = guide_example(uuid.uuid4().hex[:8])
    request = tmp_path / "MyCustomAction.json"
    request.write_text(json.dumps(example))
    code, answer, stderr = aws_cli(
        local.endpoint_url,
        "codepipeline",
        "create-custom-action-type",
        "--cli-input-json",
        f"file://{request}",
    )

    try:
        assert code == 0, stderr
        assert answer["actionType"]["id"]["owner"] == "Custom"
    finally:
        delete(aws("codepipeline"), example)


def test_identical_definition_is_idempotent_and_a_different_one_is_refused(lab: Lab) -> None:
    type_id = lab.action_type("Same")
    again = lab.codepipeline.create_custom_action_type(
        category="Build",
        provider=type_id["provider"],
        version="1",
        settings={},
        configurationProperties=[],
        inputArtifactDetails={"minimumCount": 1, "maximumCount": 1},
        outputArtifactDetails={"minimumCount": 0, "maximumCount": 1},
    )
    assert again["actionType"]["id"] == type_id

    with pytest.raises(lab.codepipeline.exceptions.ValidationException, match="different"):
        lab.codepipeline.create_custom_action_type(
            category="Build",
            provider=type_id["provider"],
            version="1",
            inputArtifactDetails={"minimumCount": 0, "maximumCount": 1},
            outputArtifactDetails={"minimumCount": 0, "maximumCount": 1},
        )


def test_deleted_type_cannot_be_polled_until_restored(lab: Lab) -> None:
    type_id = lab.action_type("Gone")
    lab.codepipeline.delete_custom_action_type(
        category="Build", provider=type_id["provider"], version="1"
    )

    with pytest.raises(lab.codepipeline.exceptions.ActionTypeNotFoundException):
        lab.codepipeline.poll_for_jobs(actionTypeId=type_id, maxBatchSize=1)

    lab.action_type("Gone")  # the identical definition restores it
    assert lab.codepipeline.poll_for_jobs(actionTypeId=type_id, maxBatchSize=1)["jobs"] == []


@pytest.mark.parametrize(
    ("properties", "message"),
    [
        (
            [
                {"name": n, "required": True, "key": False, "secret": False, "queryable": True}
                for n in ("A", "B")
            ],
            "At most one",
        ),
        (
            [{"name": "A", "required": False, "key": False, "secret": False, "queryable": True}],
            "must be required",
        ),
        (
            [{"name": "A", "required": True, "key": False, "secret": True, "queryable": True}],
            "must not be secret",
        ),
    ],
)
def test_queryable_property_rules(lab: Lab, properties: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(lab.codepipeline.exceptions.ValidationException, match=message):
        lab.action_type("Query", properties=properties)


def test_url_templates_may_only_use_required_public_properties(lab: Lab) -> None:
    secret = [{"name": "Token", "required": True, "key": False, "secret": True}]
    with pytest.raises(lab.codepipeline.exceptions.ValidationException, match="Token"):
        lab.action_type(
            "Url", properties=secret, settings={"entityUrlTemplate": "https://x/{Config:Token}"}
        )


def test_list_action_types_filters_by_owner_and_paginates(
    lab: Lab, tune: Callable[..., None]
) -> None:
    created = [lab.action_type(f"Page{i}")["provider"] for i in range(3)]
    tune(page_size=2)

    providers: list[str] = []
    pages = 0
    kwargs: dict[str, Any] = {"actionOwnerFilter": "Custom"}
    while True:
        answer = lab.codepipeline.list_action_types(**kwargs)
        pages += 1
        assert len(answer["actionTypes"]) <= 2
        providers += [t["id"]["provider"] for t in answer["actionTypes"]]
        if "nextToken" not in answer:
            break
        kwargs["nextToken"] = answer["nextToken"]

    assert pages >= 2
    assert set(created) <= set(providers)
    assert len(providers) == len(set(providers))
    aws_owned = lab.codepipeline.list_action_types(actionOwnerFilter="AWS")["actionTypes"]
    ids = [(t["id"]["category"], t["id"]["provider"]) for t in aws_owned]
    assert ("Source", "S3") in ids
    assert ("Invoke", "Lambda") in ids


def test_bad_next_token_is_refused(lab: Lab) -> None:
    with pytest.raises(lab.codepipeline.exceptions.InvalidNextTokenException):
        lab.codepipeline.list_action_types(nextToken="not-a-token")
