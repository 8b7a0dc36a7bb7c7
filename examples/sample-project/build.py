"""The sample project's build: count words in src/ and write dist/report.txt."""

import pathlib

root = pathlib.Path(__file__).parent
dist = root / "dist"
dist.mkdir(exist_ok=True)
lines = []
for path in sorted((root / "src").glob("*.txt")):
    words = len(path.read_text().split())
    lines.append(f"{path.name}: {words} words")
    print(f"counted {path.name}")
(dist / "report.txt").write_text("\n".join(lines) + "\n")
print(f"wrote {dist / 'report.txt'}")
