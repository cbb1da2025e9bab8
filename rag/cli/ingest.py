"""`rag ingest PATH...`: index folders and files of articles and pictures."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from rag.cli.common import emit_json, settings_from, storage_options, user_errors

EXIT_SKIPPED = 3


@click.command("ingest")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--prune", is_flag=True, help="Also drop files under PATHS that were indexed before and are gone now.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@storage_options
@user_errors
def command(paths, prune, as_json, quiet, storage, text_model, image_model) -> None:
    """Index PATHS (folders or .txt/.md/.jpg/.png/.gif/.webp/.bmp/.tiff files).

    Unchanged files are skipped, changed files replace their old passages and images,
    and bad files are listed with the reason while the rest is indexed. A manifest.jsonl
    in a folder (as written by `rag fetch`) supplies titles, URLs and captions.

    Exit status: 0 when every file was indexed or unchanged, 3 when some were skipped.
    """
    from rag.index.core import open_index
    from rag.index.ingest import ingest

    settings = settings_from(storage, text_model, image_model)
    with open_index(settings) as index:
        report = ingest(index, paths, prune=prune, progress=not quiet and not as_json)
    if as_json:
        emit_json(report.to_dict())
    else:
        click.echo(
            f"Indexed {report.files_indexed} files: {report.text_nodes} passages, {report.image_nodes} images "
            f"({report.unchanged} unchanged, {report.removed} removed, {report.ignored} ignored) "
            f"in {report.seconds:.1f} s."
        )
        click.echo(f"Collections now hold {report.points.get('text', 0)} passages and {report.points.get('image', 0)} images.")
        if report.skipped:
            click.echo(f"Skipped {len(report.skipped)} files:", err=True)
            for item in report.skipped:
                click.echo(f"  {item['path']}: {item['reason']}", err=True)
    if not report.ok:
        sys.exit(EXIT_SKIPPED)
