"""`rag ask`: answer a question from the index with numbered citations."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import click

from rag.cli.common import emit_json, filter_option, service_from, stderr, storage_options
from rag.types import AskRequest


def _print_sources(answer) -> None:  # answer: rag.answer.Answer
    cited = {s.n for s in answer.cited}
    click.echo("Sources:")
    if not answer.sources:
        click.echo("  (none found)")
    for src in answer.sources:
        mark = "" if answer.answer is None or src.n in cited else "  (not cited)"
        click.echo(f"  [{src.n}] {src.label()}{mark}")


@click.command("ask")
@click.argument("question")
@click.option(
    "--image",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An image to ask about: it is used for retrieval and sent to vision models.",
)
@click.option("--top-k", type=click.IntRange(min=0), default=5, show_default=True,
              help="Passages to retrieve.")
@click.option("--image-top-k", type=click.IntRange(min=0), default=3, show_default=True,
              help="Images to retrieve.")
@filter_option
@click.option("--llm", "llm", type=click.Choice(["none", "openai", "openai-like", "ollama"]),
              help="LLM backend (overrides RAG_LLM).")
@click.option("--model", help="Model name (overrides RAG_LLM_MODEL).")
@click.option("--json", "as_json", is_flag=True, help="Print the answer, sources and citations as JSON.")
@click.option("--no-stream", is_flag=True, help="Print the answer once complete instead of as it arrives.")
@storage_options
def command(
    question: str,
    image: Optional[Path],
    top_k: int,
    image_top_k: int,
    filters: Dict[str, str],
    llm: Optional[str],
    model: Optional[str],
    as_json: bool,
    no_stream: bool,
    storage: Any,
    text_model: Optional[str],
    image_model: Optional[str],
) -> None:
    """Answer QUESTION from the indexed passages and images, citing them as [1], [2], ...

    The LLM comes from RAG_LLM: none (default: no model is called; prints the prompt that
    would be sent and the sources), openai (OPENAI_API_KEY), ollama (a local server,
    RAG_LLM_BASE_URL default http://localhost:11434) or openai-like (any OpenAI-compatible
    server: vLLM, LM Studio, llama.cpp; set RAG_LLM_BASE_URL and RAG_LLM_MODEL). Vision
    models receive the images; text-only models get their captions (RAG_LLM_VISION=auto|true|false).

    \b
    Examples:
      rag ask "When was the Eiffel Tower built?"
      rag ask "What animal is this?" --image rag/sample/images/domestic-cat-1.jpg --json
      rag ask "What is it made of?" --filter title="Eiffel Tower"
      RAG_LLM=ollama RAG_LLM_MODEL=qwen2.5vl rag ask "What colour is the tower?"
    """
    if not question.strip() and image is None:
        raise click.UsageError("nothing to ask: give a QUESTION, an image (--image PATH), or both")
    request = AskRequest(question=question, image=str(image) if image else None, top_k=top_k,
                         image_top_k=image_top_k, filters=dict(filters))
    with service_from(storage, text_model, image_model, llm=llm, llm_model=model) as service:
        configured = service.llm().get("configured")  # fails early on a misconfigured LLM
        if as_json or no_stream or not configured:
            answer = service.ask(request)
            if not as_json and answer.answer is not None:
                click.echo(answer.answer)
        else:
            stream = service.stream(request)
            try:
                for delta in stream:
                    click.echo(delta, nl=False)
            finally:
                click.echo()  # an error after part of the answer starts on its own line
            answer = stream.get_answer()

    if as_json:
        emit_json(answer.to_dict())
        return
    if answer.answer is None:
        click.echo("RAG_LLM=none: no model was called. This is the prompt that would be sent:")
        click.echo()
        click.echo((answer.prompt or "").rstrip("\n"))
    for note in answer.notes:
        stderr(f"Note: {note}")
    click.echo()
    _print_sources(answer)
