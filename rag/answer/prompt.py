"""The prompt: numbered passages and images, the question, and how it reaches a model.

`build_prompt(question, sources, question_image=..., vision=...)` assembles it as parts: text,
and images (a numbered source, or the image given with the question) for vision models; a
text-only model gets the captions instead. Nothing is formatted with str.format, so passages
with braces pass through as they are and no template placeholder (such as `{context_str}`)
can leak into the prompt. The same parts become LlamaIndex chat messages (`to_messages`,
images shrunk and base64-encoded once), plain text (`render`, what `RAG_LLM=none` shows) and
JSON (`to_parts`, what the notebook views draw).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from rag.media.encode import DEFAULT_MAX_SIDE, EncodedImage, ImageUnusable, encode_image
from rag.media.images import DEFAULT_MAX_PIXELS
from rag.types import Hit

PathLike = Union[str, Path]

SYSTEM_PROMPT = (
    "You answer questions using only the numbered sources you are given: text passages "
    "and images. After each statement, cite the sources that support it with their numbers "
    "in square brackets, like [1] or [2][3]. Say what an image shows only when you can see "
    "it or its caption says so. If the sources do not contain the answer, say that you do "
    "not know. Never cite a number that is not a source."
)
ANSWER_INSTRUCTION = "Answer the question from the sources above, citing them as [n]."


@dataclass
class ImagePart:
    """An image in the prompt: a numbered source (n) or the image given with the question."""

    path: str
    n: Optional[int] = None  # None: the question's own image
    encoded: Optional[EncodedImage] = None

    def to_dict(self) -> Dict[str, Any]:
        """The JSON part: `{"image": path, "n": n}` (no `n` for the question's image)."""
        return {"image": self.path} if self.n is None else {"image": self.path, "n": self.n}


def placeholder(part: Dict[str, Any]) -> str:
    """The text for an image part `{"image": path, "n": n}`: `<image [n]: path>`."""
    who = f"image [{part['n']}]" if part.get("n") is not None else "question image"
    return f"<{who}: {part['image']}>"


Part = Union[str, ImagePart]


@dataclass
class Prompt:
    """The chat prompt: a system text and a user message made of text and image parts."""

    system: str
    parts: List[Part]
    vision: bool
    notes: List[str] = field(default_factory=list)

    @property
    def images(self) -> List[ImagePart]:
        return [p for p in self.parts if isinstance(p, ImagePart)]

    def to_parts(self) -> List[Dict[str, Any]]:
        """The whole prompt as JSON parts: `{"text": ...}` and `{"image": path, "n": n}`."""
        out: List[Dict[str, Any]] = [{"text": f"### system\n{self.system}\n\n### user\n"}]
        for part in self.parts:
            if isinstance(part, ImagePart):
                out.append(part.to_dict())
            elif "text" in out[-1]:
                out[-1] = {"text": out[-1]["text"] + part}
            else:
                out.append({"text": part})
        return out

    def render(self) -> str:
        """The whole prompt as text, each image as `<image [n]: path>`: what `RAG_LLM=none` shows."""
        return "".join(p["text"] if "text" in p else placeholder(p) + "\n" for p in self.to_parts())

    def encode_images(self, max_side: int = DEFAULT_MAX_SIDE, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        """Encode every image part (once). Unreadable or oversized ones are dropped with a note."""
        kept: List[Part] = []
        for part in self.parts:
            if isinstance(part, ImagePart) and part.encoded is None:
                try:
                    part.encoded = encode_image(part.path, max_side, max_pixels=max_pixels)
                except ImageUnusable as exc:
                    self.notes.append(f"{exc} It was left out of the prompt.")
                    continue
            kept.append(part)
        self.parts = kept

    def to_messages(self, max_side: int = DEFAULT_MAX_SIDE, max_pixels: int = DEFAULT_MAX_PIXELS) -> List[Any]:
        """LlamaIndex ChatMessages: image parts become ImageBlocks carrying data: URLs."""
        from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock

        self.encode_images(max_side, max_pixels)
        blocks: List[Any] = []
        for part in self.parts:
            if isinstance(part, str):
                if blocks and isinstance(blocks[-1], TextBlock):
                    blocks[-1] = TextBlock(text=blocks[-1].text + part)
                else:
                    blocks.append(TextBlock(text=part))
            else:
                assert part.encoded is not None
                blocks.append(ImageBlock(url=part.encoded.data_url, image_mimetype=part.encoded.mime))
        return [
            ChatMessage(role=MessageRole.SYSTEM, content=self.system),
            ChatMessage(role=MessageRole.USER, blocks=blocks),
        ]


def _quoted_title(src: Hit) -> str:
    where = src.url or src.source
    title = f'"{src.title}"' if src.title else None
    if title and where:
        return f"{title} ({where})"
    return title or where or "unknown source"


def build_prompt(
    question: str,
    sources: Sequence[Hit],
    *,
    question_image: Optional[PathLike] = None,
    vision: bool = True,
    system: str = SYSTEM_PROMPT,
    instruction: str = ANSWER_INSTRUCTION,
) -> Prompt:
    """Assemble the prompt. Vision: images go as image parts next to their captions.
    Text-only: images are described by their captions only.
    """
    parts: list[Part] = []
    notes: list[str] = []
    if sources:
        parts.append("Sources:\n\n")
    else:
        parts.append("No sources were found for this question.\n\n")
    for src in sources:
        if src.modality == "image":
            parts.append(f"[{src.n}] Image from {_quoted_title(src)}\n")
            caption = (src.text or "").strip()
            parts.append(f"Caption: {caption}\n" if caption else "Caption: (none)\n")
            path = src.image_path
            if vision and path and Path(path).is_file():
                parts.append(ImagePart(path=str(path), n=src.n))
            elif vision:
                notes.append(f"Image [{src.n}] has no readable file ({path}); sent its caption only.")
                parts.append("(The image file is missing; only its caption is available.)\n")
            else:
                parts.append("(The image itself is not shown; rely on its caption.)\n")
            parts.append("\n")
        else:
            parts.append(f"[{src.n}] Passage from {_quoted_title(src)}\n")
            parts.append(f"{(src.text or '').strip()}\n\n")
    parts.append(f"Question: {question.strip() or '(no text: see the image)'}\n")
    if question_image is not None:
        if vision:
            parts.append(
                "The question comes with this image from the user (it is not a numbered source):\n"
            )
            parts.append(ImagePart(path=str(question_image)))
        else:
            parts.append(
                f"(The user also gave an image, {Path(question_image).name}, which this "
                "model cannot see; the sources were retrieved with it.)\n"
            )
    parts.append(f"\n{instruction}\n")
    return Prompt(system=system, parts=parts, vision=vision, notes=notes)
