"""P2: an output artifact from a tree to a zip in the artifact store (SSE-KMS), against its
anchor.

The tree is P1's (``bench/p1_input.py``): one incompressible blob (256 MiB; 2 GiB with
``--large``) and 20,000 small text files. The bucket is in ``cpworker local`` (moto S3
and KMS, a subprocess on loopback, dummy credentials), and every upload is encrypted
with ``aws:kms`` under one KMS key. Each variant runs in a fresh child process, the
variants interleaved:

- ``make_archive``: ``shutil.make_archive`` then ``upload_file`` with the key (anchor);
- ``cpworker``: ``OutputArtifact.upload_dir`` with the job's style of S3 client, what a
  handler's ``job.outputs.one().upload_dir(...)`` runs.

The ratio, printed last, is cpworker over make_archive: goal ≤ 0.5, with a peak RSS
≤ 80 MiB. ``--quick`` (4 MiB, 200 files, one repetition) only proves that the bench
works. Run: ``.venv/bin/python bench/p2_output.py [--large] [--repeat 3]``.
"""

from __future__ import annotations

import shutil
import sys
import zipfile
from pathlib import Path

import boto3
import harness
from p1_input import (
    BUCKET,
    MIB,
    REGION,
    arguments,
    bench_setup,
    guide_client,
    job_client,
    print_rss,
    run_variants,
    sizes,
)

from cpworker.artifacts import OutputArtifact

KEY = "pipeline/Out/artifact.zip"


# -- the variants, each in its own child: ENDPOINT KMS_KEY TREE SCRATCH ----------------------


def make_archive(argv: list[str]) -> None:
    endpoint_url, key_id, tree, scratch = argv
    archive = shutil.make_archive(str(Path(scratch) / "artifact"), "zip", tree)
    extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": key_id}
    guide_client(endpoint_url).upload_file(archive, BUCKET, KEY, ExtraArgs=extra)


def cpworker_upload(argv: list[str]) -> None:
    endpoint_url, key_id, tree, scratch = argv
    artifact = OutputArtifact(
        name="Out",
        bucket=BUCKET,
        key=KEY,
        client=job_client(endpoint_url),
        workspace=Path(scratch),
        encryption_key_id=key_id,
    )
    artifact.upload_dir(tree)


VARIANTS = {"make_archive": make_archive, "cpworker": cpworker_upload}


def check_upload(s3: object, tree: Path, folder: Path) -> None:
    """The uploaded zip holds the tree: same names and bytes."""
    local = folder / "uploaded.zip"
    s3.download_file(BUCKET, KEY, str(local))  # type: ignore[attr-defined]
    with zipfile.ZipFile(local) as zf:
        names = {info.filename.rstrip("/") for info in zf.infolist()}
        if names != {path.relative_to(tree).as_posix() for path in tree.rglob("*")}:
            raise RuntimeError("the uploaded zip does not hold the tree")
        if zf.testzip() is not None:
            raise RuntimeError("the uploaded zip fails its CRC check")
    local.unlink()


def main() -> None:
    harness.child_main(VARIANTS)
    args = arguments("P2: output artifact zip and upload against make_archive + upload_file")
    size = sizes(args)
    print(f"P2 output: {size.blob_bytes // MIB} MiB blob + {size.files} small files", flush=True)
    with bench_setup(size, "cpw-p2-") as setup:
        kms = boto3.client(
            "kms",
            endpoint_url=setup.endpoint_url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - moto's dummy
        )
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        runs = [setup.endpoint_url, key_id, str(setup.tree)]
        check = setup.folder / "check"
        check.mkdir()
        cpworker_upload([*runs, str(check)])
        check_upload(setup.s3, setup.tree, check)
        samples = run_variants(__file__, list(VARIANTS), args.repeat, runs, setup.folder)
    print_rss(samples, "cpworker")
    harness.report(samples, "cpworker", "make_archive", "≤ 0.5")


if __name__ == "__main__":
    sys.exit(main())
