"""Word count as a wireframe service: map a counting operation over files, fold the counts.

Layers: a ``JobRuntimeLayer`` (the ``Runtime`` resource), a ``WorkerLayer``
(the worker loop) and ``WordCountLayer``, whose task maps :class:`CountWords`
over the files of a folder, folds the per-file counts with :class:`MergeCounts`
(in parallel, on the workers), prints the top words and returns — a ``Task``
that returns stops the service, so the run ends.

Run it::

    python examples/wordcount.py [FOLDER] [--broker URL] [--top N]
    wireframe run examples/wordcount.py

The broker URL comes from ``--broker``, else the ``WORDCOUNT_BROKER``
environment variable, else an SQLite file in the system temp directory
(``sqlite:///<tmp>/wireframe-wordcount.db``). ``memory://?workers=4`` runs
everything in-process (the runtime layer then adds 4 emulated workers).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

import attrs
import trio

import wireframe as wf
from wireframe import jobs

DEFAULT_FOLDER = Path(__file__).parent / "texts"
DEFAULT_BROKER = f"sqlite:///{Path(tempfile.gettempdir()) / 'wireframe-wordcount.db'}"
WORD = re.compile(r"[a-z']+")


def count_words(text: str) -> dict[str, int]:
    """The local computation: lower-cased words (letters and apostrophes) and their counts."""
    return dict(Counter(w.strip("'") for w in WORD.findall(text.lower()) if w.strip("'")))


@attrs.frozen
class CountWords(jobs.Operation[str, dict[str, int]], name="wordcount.count-words"):
    """Count the words of one file (a path); reads the file in a worker thread."""

    def execute(self, path: str) -> dict[str, int]:
        return count_words(Path(path).read_text(encoding="utf-8"))


@attrs.frozen
class MergeCounts(jobs.Monoid[dict[str, int]], name="wordcount.merge-counts"):
    """Add two word counts."""

    def empty(self) -> dict[str, int]:
        return {}

    def combine(self, a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
        merged = dict(a)
        for word, n in b.items():
            merged[word] = merged.get(word, 0) + n
        return merged


def top_words(counts: dict[str, int], n: int) -> list[tuple[str, int]]:
    """The ``n`` most frequent words, ties broken alphabetically."""
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


@attrs.define
class WordCountTask(wf.Task):
    """Maps CountWords over the folder's files, folds the counts, prints the top words."""

    runtime: jobs.Runtime
    folder: Path
    top: int
    id = "wordcount"

    async def run(self, stop: wf.StopReceiver) -> None:
        files = sorted(str(p) for p in self.folder.glob("*.txt"))
        counts = (
            await jobs.from_iter(files)
            .map(CountWords())
            .fold(MergeCounts())
            .run(self.runtime, timeout=60)
        )
        print(f"{len(files)} files, {sum(counts.values())} words, {len(counts)} distinct")
        for word, n in top_words(counts, self.top):
            print(f"{n:6d} {word}")


@attrs.frozen
class WordCountInput:
    runtime: jobs.Runtime


@attrs.frozen
class WordCountOutput:
    task: WordCountTask


@attrs.frozen
class WordCountLayer(wf.WiringLayer[WordCountInput, WordCountOutput]):
    """Gives the word-count task; takes the job runtime."""

    folder: Path = DEFAULT_FOLDER
    top: int = 10
    name = "wordcount"

    async def wire(self, input: WordCountInput) -> WordCountOutput:
        return WordCountOutput(WordCountTask(input.runtime, self.folder, self.top))


def make_builder(
    folder: Path = DEFAULT_FOLDER, broker: str | None = None, top: int = 10
) -> wf.ServiceBuilder:
    """The word-count service: runtime, worker and the counting task."""
    url = broker or os.environ.get("WORDCOUNT_BROKER") or DEFAULT_BROKER
    return (
        wf.ServiceBuilder(graceful_shutdown_timeout=10.0)
        .add_layer(jobs.JobRuntimeLayer(url))
        .add_layer(jobs.WorkerLayer(url, concurrency=4))
        .add_layer(WordCountLayer(folder, top))
    )


#: For ``wireframe run examples/wordcount.py``.
builder = make_builder()


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python examples/wordcount.py [FOLDER] [--broker URL] [--top N]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--broker", default=None, help="broker URL (env WORDCOUNT_BROKER)")
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args(argv)
    service = make_builder(args.folder, args.broker, args.top).build()
    trio.run(service.run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
