"""`rag ingest PATH...`: index folders and files of articles and pictures."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence

import click

from rag.cli.common import emit_json, plural, service_from, show_progress, stderr, storage_options

EXIT_SKIPPED = 3


def ignored_files(paths: Sequence[Path]) -> List[str]:
    """The files under PATHS that ingest passes over (not articles or images, or not in a manifest)."""
    from rag.corpus.files import scan_paths
    from rag.corpus.manifest import find_manifests

    return scan_paths(paths, listed=set(find_manifests(paths)))[2]


def summary(report: Any) -> List[str]:
    """The human report: what was indexed, then what the collections hold."""
    return [
        f"Indexed {plural(report.files_indexed, 'file')}: {plural(report.text_nodes, 'passage')}, "
        f"{plural(report.image_nodes, 'image')} ({report.unchanged} unchanged, {report.removed} removed, "
        f"{report.ignored} ignored) in {report.seconds:.1f} s.",
        f"Collections now hold {plural(report.points.get('text', 0), 'passage')} and "
        f"{plural(report.points.get('image', 0), 'image')}.",
    ]


@click.command("ingest")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--prune", is_flag=True, help="Also drop files under PATHS that were indexed before and are gone now.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--verbose", "-v", is_flag=True, help="Also list the ignored files.")
@storage_options
def command(paths, prune, as_json, quiet, verbose, storage, text_model, image_model) -> None:
    """Index PATHS (folders or .txt/.md/.jpg/.png/.gif/.webp/.bmp/.tiff files).

    Unchanged files are skipped, changed files replace their old passages and images,
    and bad files are listed with the reason while the rest is indexed. A manifest.jsonl
    in a folder (as written by `rag fetch`) supplies titles, URLs and captions; the other
    files of that folder are ignored (--verbose names them).

    Progress bars go to stderr, only when it is a terminal.

    Exit status: 0 when every file was indexed or unchanged, 2 for a path that does not
    exist, 3 when some files were skipped.
    """
    with service_from(storage, text_model, image_model) as service:
        report = service.ingest(paths, prune=prune, progress=show_progress(quiet, as_json))
    ignored = ignored_files(paths) if report.ignored and (as_json or verbose) else []
    if as_json:
        data: Dict[str, Any] = report.to_dict()
        data["ignored_files"] = ignored
        emit_json(data)
    else:
        for line in summary(report):
            click.echo(line)
        if ignored:
            click.echo(f"{plural(len(ignored), 'file')} ignored:")
            for name in ignored:
                click.echo(f"  {name}")
        if report.skipped:
            stderr(f"{plural(len(report.skipped), 'file')} skipped:")
            for item in report.skipped:
                stderr(f"  {item['path']}: {item['reason']}")
    if not report.ok:
        sys.exit(EXIT_SKIPPED)
