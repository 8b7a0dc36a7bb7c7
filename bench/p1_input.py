"""P1: an input artifact from the artifact store to an extracted tree, against its anchors.

The artifact is a zip of one incompressible blob (256 MiB; 2 GiB with ``--large``;
stored, as ``zip`` and cpworker store what does not compress) and 20,000 small text
files (deflated, 200 to 4,000 bytes, 100 directories), in a bucket of ``cpworker
local`` (moto S3, a subprocess on loopback, dummy credentials). Each variant runs in a
fresh child process (``bench/harness.py``; imports are done before its clock starts),
interleaved, and extracts into a fresh directory:

- ``get``: one streamed GET of the object alone, its bytes dropped (anchor a);
- ``extractall``: ``zipfile.ZipFile.extractall`` of a local copy alone (anchor b);
- ``guide``: the User Guide's way, ``download_file`` then ``extractall`` (anchor c);
- ``cpworker``: ``InputArtifact.extract()`` with the job's style of S3 client
  (``artifact_s3_client``), the code a handler's ``job.inputs.one().extract()`` runs.

The ratio, printed last, is cpworker over max(get, extractall): goal ≤ 0.9, with a
peak RSS ≤ 80 MiB. ``--quick`` (4 MiB, 200 files, one repetition) only proves that the
bench works. Run: ``.venv/bin/python bench/p1_input.py [--large] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import stat
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import harness
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from cpworker.artifacts import InputArtifact, artifact_s3_client

MIB = 1024 * 1024
REGION = "us-east-1"
BUCKET = "bench-artifacts"
DIRECTORIES = 100
WORDS = ["def", "class", "return", "import", "self", "value", "name", "path", "data", "item"]
RSS_GOAL_MIB = 80


@dataclass(frozen=True)
class Sizes:
    """What the tree holds: one blob of ``blob_bytes`` and ``files`` small files."""

    blob_bytes: int
    files: int


def sizes(args: argparse.Namespace) -> Sizes:
    if args.quick:
        return Sizes(4 * MIB, 200)
    return Sizes((2048 if args.large else 256) * MIB, 20_000)


def arguments(description: str) -> argparse.Namespace:
    """The options both artifact benches take."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--large", action="store_true", help="a 2 GiB blob instead of 256 MiB")
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of each variant")
    args = parser.parse_args()
    if args.quick:
        args.repeat = 1
    return args


def write_tree(root: Path, size: Sizes, seed: int = 11) -> None:
    """The blob (random bytes) and the small files (text, every tenth executable)."""
    (root / "assets").mkdir(parents=True)
    with (root / "assets" / "blob.bin").open("wb") as out:
        for at in range(0, size.blob_bytes, MIB):
            out.write(os.urandom(min(MIB, size.blob_bytes - at)))
    rng = random.Random(seed)  # noqa: S311 - file contents, not secrets
    for index in range(size.files):
        folder = root / "src" / f"d{index % DIRECTORIES:03}"
        folder.mkdir(parents=True, exist_ok=True)
        words = rng.choices(WORDS, k=rng.randrange(40, 700))
        path = folder / f"f{index:05}.py"
        path.write_text(" ".join(words) + "\n")
        if index % 10 == 0:
            path.chmod(0o755)


def zip_tree(root: Path, out: Path) -> None:
    """The tree as ``zip -r`` makes it: the blob stored, the text deflated, Unix modes."""
    with zipfile.ZipFile(out, "w") as zf:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                method = zipfile.ZIP_STORED if path.name == "blob.bin" else zipfile.ZIP_DEFLATED
                zf.write(path, path.relative_to(root).as_posix(), compress_type=method)


def job_client(endpoint_url: str) -> Any:
    """The S3 client a job gets (its credentials are the emulator's dummies)."""
    return artifact_s3_client(
        access_key_id="testing",
        secret_access_key="testing",  # noqa: S106 - moto's dummy
        session_token=None,
        region=REGION,
        endpoint_url=endpoint_url,
    )


def guide_client(endpoint_url: str) -> Any:
    """The client the User Guide's sample builds from the job's credentials (SigV4)."""
    session = boto3.session.Session(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - moto's dummy
        region_name=REGION,
    )
    config = Config(signature_version="s3v4", s3={"addressing_style": "path"})
    return session.client("s3", endpoint_url=endpoint_url, config=config)


@dataclass(frozen=True)
class Setup:
    """A running emulator with a bucket, the tree on disk and a folder for the runs."""

    folder: Path
    tree: Path
    endpoint_url: str
    s3: Any


@contextmanager
def bench_setup(size: Sizes, prefix: str) -> Iterator[Setup]:
    """Write the tree and start ``cpworker local``; everything goes at the end."""
    from chaos import Emulator, clients  # the parent's only: children stay small

    folder = Path(tempfile.mkdtemp(prefix=prefix))
    emulator = None
    try:
        write_tree(folder / "tree", size)
        emulator = Emulator(folder)
        _, s3 = clients(emulator.endpoint_url)
        s3.create_bucket(Bucket=BUCKET)
        yield Setup(folder, folder / "tree", emulator.endpoint_url, s3)
    finally:
        if emulator is not None:
            emulator.stop()
        shutil.rmtree(folder, ignore_errors=True)


def run_variants(
    script: str, names: Sequence[str], repeat: int, args: Sequence[str], folder: Path
) -> dict[str, list[harness.Sample]]:
    """Every variant ``repeat`` times, interleaved, each in an empty directory of ``folder``.

    The small files a run made are kept until the end: on ext4 without a journal (this
    machine's disk), files created soon after thousands were deleted cost several times
    more (the allocator skips inodes freed in the last minutes), which would charge a
    variant for its predecessor's clean-up. Large files go at once (few inodes). Each
    sample starts once the disk has written what the previous one left in the page
    cache (``os.sync``): its writeback would otherwise fall on the next variant.
    """
    samples: dict[str, list[harness.Sample]] = {name: [] for name in names}
    for rep, name in harness.interleaved(names, repeat):
        scratch = folder / f"{name}-{rep}"
        scratch.mkdir()
        os.sync()
        try:
            sample = harness.measure(script, name, [*args, str(scratch)])
        finally:
            drop_large_files(scratch)
        print(f"  rep {rep + 1} {name}: {sample.wall:.3f} s, {sample.peak_mib:.1f} MiB", flush=True)
        samples[name].append(sample)
    return samples


def drop_large_files(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_size > MIB:
            path.unlink()


def print_rss(samples: Mapping[str, Sequence[harness.Sample]], measured: str) -> None:
    peak = max(sample.peak_mib for sample in samples[measured])
    verdict = "met" if peak <= RSS_GOAL_MIB else "NOT met"
    print(f"peak RSS of {measured}: {peak:.1f} MiB (goal ≤ {RSS_GOAL_MIB} MiB: {verdict})")


# -- the variants, each in its own child: ENDPOINT KEY ZIP SCRATCH ---------------------------


def streamed_get(argv: list[str]) -> None:
    endpoint_url, key, _, _ = argv
    body = guide_client(endpoint_url).get_object(Bucket=BUCKET, Key=key)["Body"]
    for _ in body.iter_chunks(MIB):
        pass


def extractall(argv: list[str]) -> None:
    _, _, local_zip, scratch = argv
    with zipfile.ZipFile(local_zip) as zf:
        zf.extractall(Path(scratch) / "out")


def guide(argv: list[str]) -> None:
    endpoint_url, key, _, scratch = argv
    downloaded = Path(scratch) / "artifact.zip"
    guide_client(endpoint_url).download_file(BUCKET, key, str(downloaded))
    with zipfile.ZipFile(downloaded) as zf:
        zf.extractall(Path(scratch) / "out")


def cpworker_extract(argv: list[str]) -> None:
    endpoint_url, key, _, scratch = argv
    artifact = InputArtifact(
        name="Src",
        bucket=BUCKET,
        key=key,
        revision=None,
        client=job_client(endpoint_url),
        workspace=Path(scratch),
    )
    artifact.extract()


VARIANTS: dict[str, Callable[[list[str]], None]] = {
    "get": streamed_get,
    "extractall": extractall,
    "guide": guide,
    "cpworker": cpworker_extract,
}


def check_tree(tree: Path, extracted: Path) -> None:
    """The extracted tree is the original one: same names, modes and bytes."""
    for path in tree.rglob("*"):
        copy = extracted / path.relative_to(tree)
        same_mode = stat.S_IMODE(copy.stat().st_mode) == stat.S_IMODE(path.stat().st_mode)
        if path.is_file() and not (same_mode and copy.read_bytes() == path.read_bytes()):
            raise RuntimeError(f"{path.relative_to(tree)} differs once extracted")


def main() -> None:
    harness.child_main(VARIANTS)
    args = arguments("P1: input artifact download and extraction against its anchors")
    size = sizes(args)
    print(f"P1 input: {size.blob_bytes // MIB} MiB blob + {size.files} small files", flush=True)
    with bench_setup(size, "cpw-p1-") as setup:
        local_zip = setup.folder / "artifact.zip"
        zip_tree(setup.tree, local_zip)
        key = "pipeline/Src/artifact.zip"
        config = _single_put(local_zip.stat().st_size)
        setup.s3.upload_file(str(local_zip), BUCKET, key, Config=config)
        print(f"zip of {local_zip.stat().st_size / MIB:.1f} MiB in the artifact store", flush=True)
        check = setup.folder / "check"
        check.mkdir()
        cpworker_extract([setup.endpoint_url, key, str(local_zip), str(check)])
        check_tree(setup.tree, check / "inputs" / "Src")
        drop_large_files(check)
        runs = [setup.endpoint_url, key, str(local_zip)]
        samples = run_variants(__file__, list(VARIANTS), args.repeat, runs, setup.folder)
    medians = {name: harness.median_wall(runs) for name, runs in samples.items()}
    print(f"cpworker / guide = {medians['cpworker'] / medians['guide']:.2f}x")
    print_rss(samples, "cpworker")
    harness.report(
        samples,
        "cpworker",
        "max(get, extractall)",
        "≤ 0.9",
        ratio=lambda m: m["cpworker"] / max(m["get"], m["extractall"]),
    )


def _single_put(size: int) -> Any:
    """One PutObject whatever the size (a multipart source meets a checksum bug of
    ``cpworker local`` being fixed apart)."""
    return TransferConfig(multipart_threshold=size + 1)


if __name__ == "__main__":
    sys.exit(main())
