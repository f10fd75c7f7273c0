"""Write the README's benchmark table from benchmarks/results.json, between its marker comments.

    python benchmarks/render_table.py            # rewrite the tables in README.md
    python benchmarks/render_table.py --check    # exit 1 when README.md's tables are not what results.json gives

The block between ``<!-- benchmarks:start -->`` and ``<!-- benchmarks:end -->``
is generated: where the figures come from (commit, machine, library versions),
a warning when any entry is a smoke run, then one table row per renderer row of
every benchmark in ``run_all.BENCHMARKS``, in that order. A benchmark without an
entry shows "not run yet"; one that failed or whose file is missing says so (and
when a rerun failed, the earlier result stays with a row saying so).
The block depends on results.json and the renderers alone.

A benchmark with a ``detail`` renderer (the recipe studies) also has its own
table, between ``<!-- results:NAME:start -->`` and ``<!-- results:NAME:end -->``
where the README discusses it, generated the same way.
``tests/test_benchmark_table.py`` fails when the README and results.json disagree.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import renderers  # noqa: E402
from run_all import BENCHMARKS, REPO, RESULTS, load_results  # noqa: E402

README = REPO / "README.md"
START, END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"
HEADER = "| command | what | result |\n|---|---|---|"
SMOKE_WARNING = ("**Smoke run (`--quick`) figures below: they show that the benchmarks run and measure nothing. "
                 "`python benchmarks/run_all.py` replaces them.**")


def render(results: dict | None, table=BENCHMARKS) -> str:
    """The generated block (without the markers) for ``results`` (None: no results file yet)."""
    lines = [provenance(results), ""]
    if results and results.get("quick"):
        lines += [SMOKE_WARNING, ""]
    lines.append(HEADER)
    entries = (results or {}).get("benchmarks", {})
    for benchmark in table:
        for command, what, result in table_rows(benchmark, entries.get(benchmark.name)):
            lines.append(f"| `{command}` | {cell(what)} | {cell(result)} |")
    return "\n".join(lines)


def table_rows(benchmark, entry: dict | None) -> list[tuple[str, str, str]]:
    """(command, what, result) rows of one benchmark's entry."""
    if entry is None:
        return [(" ".join(benchmark.command(quick=False)), "", "not run yet")]
    command = entry["command"]
    if entry["status"] == "missing":
        return [(command, "", f"not run: {benchmark.script} not found")]
    if entry["status"] != "ok":
        return [(command, "", f"failed ({entry.get('error', 'unknown')}) at commit {short(entry.get('commit'))}; see results.json")]
    smoke = "(smoke run) " if entry.get("quick") else ""
    rows = [(command, what, smoke + result) for what, result in cells_of(benchmark, entry["result"])]
    if "last_attempt" in entry:  # a rerun failed and this earlier result stayed
        attempt = entry["last_attempt"]
        rows.append((attempt["command"], "its last rerun", f"failed ({attempt.get('error', 'unknown')}) at commit "
                                                           f"{short(attempt.get('commit'))}; the row above is the earlier result"))
    return rows


def cells_of(benchmark, result: dict) -> list[tuple[str, str]]:
    """The benchmark's renderer on ``result``; the generic one when the JSON no longer fits it."""
    try:
        return benchmark.render(result)
    except (KeyError, TypeError, ValueError, IndexError):
        return renderers.generic(result)


def provenance(results: dict | None) -> str:
    """One paragraph: where the figures come from and how to regenerate them."""
    regenerate = "`python benchmarks/run_all.py` (all, or `--only NAME,...`) writes `benchmarks/results.json` and this table from it"
    if not results:
        return f"No `benchmarks/results.json` yet: {regenerate}."
    m = results["machine"]
    commits = sorted({short(entry.get("commit")) for entry in results["benchmarks"].values()})
    uncommitted = any(entry.get("uncommitted_changes") for entry in results["benchmarks"].values())
    return (
        f"Figures from `benchmarks/results.json` (commit{'s' if len(commits) > 1 else ''} {', '.join(f'`{c}`' for c in commits)}"
        f"{' with uncommitted changes' if uncommitted else ''}; last updated {results['updated'][:10]}), measured on "
        f"{m['cpu']} ({m['cores']} cores), Python {m['python']}, torch {m['torch']}, transformers {m['transformers']}, "
        f"sentence-transformers {m['sentence-transformers']}. {regenerate}."
    )


def short(commit: str | None) -> str:
    return commit[:7] if commit else "unknown"


def cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def render_detail(benchmark, entry: dict | None) -> str:
    """``benchmark``'s detail table with the command and commit it comes from, or what to run for it."""
    if entry is None or entry["status"] != "ok":
        state = "Not run yet" if entry is None else f"Its last run {entry['status']}"
        return f"{state}: `{' '.join(benchmark.command(quick=False))}` writes this table into `benchmarks/results.json`."
    smoke = "Smoke run (`--quick`), measuring nothing: " if entry.get("quick") else ""
    return (f"{smoke}`{entry['command']}` at commit `{short(entry.get('commit'))}` (`benchmarks/results.json`):\n\n"
            f"{benchmark.detail(entry['result'])}")


def generated_blocks(results: dict | None, table=BENCHMARKS) -> dict[str | None, str]:
    """Every generated block: None -> the benchmark table, a benchmark's name -> its detail table."""
    entries = (results or {}).get("benchmarks", {})
    details = {b.name: render_detail(b, entries.get(b.name)) for b in table if b.detail is not None}
    return {None: render(results, table), **details}


def markers(name: str | None = None) -> tuple[str, str]:
    """The comments around a generated block: the benchmark table's (None) or benchmark ``name``'s detail table."""
    return (START, END) if name is None else (f"<!-- results:{name}:start -->", f"<!-- results:{name}:end -->")


def readme_block(text: str, name: str | None = None) -> str:
    """The generated block of README ``text`` (between the markers, stripped)."""
    start, end = marker_positions(text, name)
    return text[start + len(markers(name)[0]):end].strip("\n")


def with_block(text: str, block: str, name: str | None = None) -> str:
    """README ``text`` with ``block`` between the markers."""
    start, end = marker_positions(text, name)
    return f"{text[:start + len(markers(name)[0])]}\n{block}\n{text[end:]}"


def marker_positions(text: str, name: str | None = None) -> tuple[int, int]:
    first, last = markers(name)
    start, end = text.find(first), text.find(last)
    if start < 0 or end < start:
        raise SystemExit(f"error: README.md has no {first} ... {last} block; put the two markers where the table goes")
    return start, end


def stale_blocks(text: str, results: dict | None, table=BENCHMARKS) -> list[str]:
    """The generated blocks of README ``text`` that differ from what ``results`` gives ("benchmarks" for the main table)."""
    return [name or "benchmarks" for name, block in generated_blocks(results, table).items() if readme_block(text, name) != block]


def write_readme(results_path: Path = RESULTS, readme: Path = README) -> None:
    """Rewrite ``readme``'s generated blocks from ``results_path``."""
    text = readme.read_text()
    for name, block in generated_blocks(load_results(results_path)).items():
        text = with_block(text, block, name)
    readme.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md's table differs from what results.json gives")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.check:
        stale = stale_blocks(README.read_text(), load_results(args.results))
        print(f"README.md's tables are stale ({', '.join(stale)}): run python benchmarks/render_table.py" if stale
              else "README.md's tables match results.json")
        sys.exit(1 if stale else 0)
    write_readme(args.results)
    print(f"wrote the generated tables of {README} from {args.results}")


if __name__ == "__main__":
    main()
