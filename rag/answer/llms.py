"""LLM backends for the query engine, chosen by `RAG_LLM`; and the errors their calls map to.

    RAG_LLM=none         (default) no model is called: the answer holds the sources and the prompt
    RAG_LLM=openai       OpenAI; model default gpt-4o-mini; key from RAG_LLM_API_KEY or OPENAI_API_KEY
    RAG_LLM=ollama       a local Ollama server (default http://localhost:11434), e.g. qwen2.5vl, llava
    RAG_LLM=openai-like  any OpenAI-compatible server (vLLM, LM Studio, llama.cpp): needs RAG_LLM_BASE_URL

Nothing here falls back to OpenAI on its own. Each backend's package is an optional extra and is
imported only when that backend is built. `resolve_llm` is pure (no imports, no I/O) and
`build_llm` constructs the LlamaIndex LLM. `llm_error` turns whatever a call raised into a
`RagError` whose text says what happened and what to do, and never contains the API key.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional
from urllib.parse import urlsplit, urlunsplit

from rag.config import Settings, default
from rag.errors import RagError

DEFAULT_MODELS = {"openai": "gpt-4o-mini", "ollama": "qwen2.5vl"}
DEFAULT_BASE_URLS = {"openai": "https://api.openai.com/v1", "ollama": "http://localhost:11434"}
# backend -> (pip package, extra of this project)
EXTRAS = {
    "openai": ("llama-index-llms-openai", "openai"),
    "openai-like": ("llama-index-llms-openai-like", "openai-like"),
    "ollama": ("llama-index-llms-ollama", "ollama"),
}
# The defaults of the settings themselves live in rag.config's table, once.
DEFAULT_TIMEOUT = float(default("llm_timeout"))
DEFAULT_MAX_RETRIES = int(default("llm_max_retries"))
DEFAULT_MAX_IMAGE_SIDE = int(default("llm_max_image_side"))
# Ollama: the context to allocate (num_ctx). Left unset, the integration asks /api/show and
# allocates the model's full window (128k for many), which can exhaust memory. Five passages
# and a few 768-px images fit well within this.
OLLAMA_CONTEXT_WINDOW = 16_384
# Servers that ignore the key (llama.cpp, LM Studio, vLLM without --api-key) still need one sent.
_PLACEHOLDER_KEY = "not-needed"


# --------------------------------------------------------------------------- errors


class LLMError(RagError):
    """A call to the LLM failed; the message says why and how to fix it."""


class LLMConfigError(LLMError):
    """The RAG_LLM* settings are incomplete or wrong."""


class MissingExtraError(LLMConfigError):
    """The package a backend needs is not installed."""


class LLMAuthError(LLMError):
    """The server rejected the API key (HTTP 401/403)."""


class LLMConnectionError(LLMError):
    """The server cannot be reached (connection refused, unknown host)."""


class LLMTimeoutError(LLMError):
    """The server did not answer within RAG_LLM_TIMEOUT seconds."""


class LLMModelNotFoundError(LLMError):
    """The server does not serve the model asked for (HTTP 404)."""


class ImagesRefusedError(LLMError):
    """The model refused the image parts of the prompt (it is not a vision model)."""


class LLMServerError(LLMError):
    """Any other error answer from the server."""


class LLMReplyError(LLMServerError):
    """The server answered, but not with a usable reply (not JSON, empty, cut short)."""


# An answer longer than this is cut there (a server that never stops is not read forever).
MAX_ANSWER_CHARS = 100_000


def answer_cut_note(limit: int = MAX_ANSWER_CHARS) -> str:
    """The note an answer carries when the server sent more than `limit` characters."""
    return f"The LLM's answer was cut at {limit:,} characters; the rest was not read."


def empty_reply_error(spec: "LLMSpec") -> LLMReplyError:
    """The error for a call that succeeded but carried no text at all."""
    return LLMReplyError(
        f"The LLM server at {spec.where} sent no answer text (an empty or unreadable reply). "
        "Check RAG_LLM_BASE_URL and RAG_LLM_MODEL, and try again."
    )


def stream_cut_error(spec: "LLMSpec", received: int) -> LLMReplyError:
    """The error for a stream that ended before the server said the answer was complete."""
    return LLMReplyError(
        f"The LLM server at {spec.where} closed the answer stream before it was complete "
        f"(after {received:,} characters); the answer is incomplete. Try again."
    )


def stream_finished(chunk: Any) -> Optional[bool]:
    """Whether a streamed chunk says the answer is complete: True/False, None when unknown."""
    raw = getattr(chunk, "raw", None)
    if isinstance(raw, Mapping):  # ollama: {"done": true} on the last chunk
        return bool(raw.get("done")) if "done" in raw else None
    choices = getattr(raw, "choices", None)
    if isinstance(choices, list):  # OpenAI-compatible: finish_reason on the last chunk
        return any(getattr(c, "finish_reason", None) for c in choices)
    return None


# --------------------------------------------------------------------------- settings


# Vision-capable model families, matched on the model name (lower case, any provider prefix).
_VISION_PATTERNS = [
    r"gpt-4o", r"chatgpt-4o", r"gpt-4\.1", r"gpt-4\.5", r"gpt-4-turbo", r"gpt-4-vision",
    r"gpt-5", r"(^|/)o1(-\d|$)", r"(^|/)o3", r"(^|/)o4",
    r"llava", r"bakllava", r"vision", r"pixtral", r"moondream", r"minicpm-?v",
    r"qwen[\d.]*-?vl", r"(^|[-_/:.])vl([-_:.]|$)", r"internvl", r"idefics", r"smolvlm",
    r"gemma-?3(?![-:.]?(1b|270m))", r"gemma-?3n", r"llama-?4", r"mistral-small-?3\.[12]",
    r"mistral-medium", r"phi-?3(\.5)?-vision", r"phi-?4-multimodal", r"granite[\d.]*-vision",
    r"cogvlm", r"glm-4\.?\dv", r"kimi-vl", r"claude-3", r"claude-(sonnet|opus|haiku)-4",
    r"gemini",
]
_VISION_RE = re.compile("|".join(f"(?:{p})" for p in _VISION_PATTERNS))


def is_vision_model(model: Optional[str]) -> bool:
    """Whether a model name belongs to a family known to read images (a heuristic).

    Override with RAG_LLM_VISION=true/false when it guesses wrong.
    """
    return bool(model) and bool(_VISION_RE.search(model.lower()))


def _display_url(url: Optional[str]) -> Optional[str]:
    """The URL without user:password@, query or fragment: safe to print."""
    if not url:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")).rstrip("/")


@dataclass(frozen=True)
class LLMSpec:
    """The resolved LLM configuration. Safe to print: the key is not in its repr."""

    backend: str
    model: Optional[str] = None
    base_url: Optional[str] = None
    vision: bool = False
    vision_setting: str = "auto"  # auto | true | false
    timeout: float = DEFAULT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    max_image_side: int = DEFAULT_MAX_IMAGE_SIDE
    api_key: Optional[str] = field(default=None, repr=False)

    @property
    def where(self) -> str:
        """Where the server is, for messages."""
        return _display_url(self.base_url) or "the LLM server"

    @property
    def secrets(self) -> list[str]:
        """Strings that must never be shown: the key, and credentials inside the base URL."""
        out = []
        if self.api_key and self.api_key != _PLACEHOLDER_KEY:
            out.append(self.api_key)
        if self.base_url:
            netloc = urlsplit(self.base_url).netloc
            if "@" in netloc:
                userinfo = netloc.rsplit("@", 1)[0]
                out.extend(p for p in [userinfo, *userinfo.split(":", 1)] if len(p) >= 4)
        return out

    @property
    def may_fall_back_to_captions(self) -> bool:
        """When the model refuses images: retry text-only (auto) or raise (vision forced)."""
        return self.vision_setting == "auto"

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model": self.model,
            "base_url": _display_url(self.base_url),
            "vision": self.vision,
        }


def resolve_llm(settings: Settings, environ: Optional[Mapping[str, str]] = None) -> LLMSpec:
    """Resolve the RAG_LLM* settings (already checked by `Settings`) to a spec with defaults. Pure.

    `environ` is consulted only for OPENAI_API_KEY (RAG_LLM=openai without RAG_LLM_API_KEY).
    """
    backend = settings.llm  # Settings checked the choices, types and ranges
    vision_setting = settings.llm_vision
    model = settings.llm_model or DEFAULT_MODELS.get(backend)
    base_url = settings.llm_base_url or DEFAULT_BASE_URLS.get(backend)
    api_key = settings.llm_api_key

    if backend == "openai" and not api_key:
        env = os.environ if environ is None else environ
        api_key = env.get("OPENAI_API_KEY") or None
        if not api_key:
            raise LLMConfigError(
                "RAG_LLM=openai needs an API key: set OPENAI_API_KEY or RAG_LLM_API_KEY."
            )
    if backend == "openai-like":
        if not base_url:
            raise LLMConfigError(
                "RAG_LLM=openai-like needs RAG_LLM_BASE_URL, the server's OpenAI-compatible "
                "address (for example http://localhost:8000/v1 for vLLM, "
                "http://localhost:1234/v1 for LM Studio, http://localhost:8080/v1 for llama.cpp)."
            )
        if not model:
            raise LLMConfigError(
                "RAG_LLM=openai-like needs RAG_LLM_MODEL, the name of a model the server serves "
                "(GET <base_url>/models lists them)."
            )
        api_key = api_key or _PLACEHOLDER_KEY

    if backend == "none":
        vision = vision_setting != "false"  # the prompt shown says where images would go
    elif vision_setting == "auto":
        vision = is_vision_model(model)
    else:
        vision = vision_setting == "true"
    if backend == "none":
        model = base_url = api_key = None
    return LLMSpec(
        backend=backend,
        model=model,
        base_url=base_url,
        vision=vision,
        vision_setting=vision_setting,
        timeout=settings.llm_timeout,
        max_retries=settings.llm_max_retries,
        max_image_side=settings.llm_max_image_side,
        api_key=api_key,
    )


# --------------------------------------------------------------------------- factory


def _missing(backend: str) -> MissingExtraError:
    package, extra = EXTRAS[backend]
    return MissingExtraError(
        f"RAG_LLM={backend} needs the package {package}, which is not installed. "
        f"Install it with: pip install 'rag[{extra}]'"
    )


@functools.lru_cache(maxsize=None)
def _openai_class(like: bool) -> type:
    """OpenAI / OpenAILike with the key hidden from repr, retries left to the openai SDK
    (which honours Retry-After) instead of stacking LlamaIndex's retries on top, and
    model names unknown to this version of the integration accepted."""
    from llama_index.core.base.llms.types import LLMMetadata
    from llama_index.core.bridge.pydantic import Field

    if like:
        from llama_index.llms.openai_like import OpenAILike as Base
    else:
        from llama_index.llms.openai import OpenAI as Base

    class _Rag(Base):  # type: ignore[misc, valid-type]
        api_key: Optional[str] = Field(default=None, repr=False, exclude=True)
        sdk_max_retries: int = Field(default=DEFAULT_MAX_RETRIES)

        def _get_credential_kwargs(self, is_async: bool = False) -> dict[str, Any]:
            kwargs = super()._get_credential_kwargs(is_async=is_async)
            kwargs["max_retries"] = self.sdk_max_retries
            return kwargs

        if not like:

            @property
            def metadata(self) -> LLMMetadata:
                try:
                    return super().metadata
                except ValueError:  # a model newer than this integration's table
                    return LLMMetadata(
                        context_window=128_000,
                        num_output=self.max_tokens or -1,
                        is_chat_model=True,
                        model_name=self.model,
                    )

    _Rag.__name__ = _Rag.__qualname__ = "RagOpenAILike" if like else "RagOpenAI"
    return _Rag


def build_llm(spec: LLMSpec) -> Any:
    """The LlamaIndex LLM for a resolved spec, or None for `none`.

    Raises MissingExtraError naming the extra to install when the backend's package is absent.
    """
    if spec.backend == "none":
        return None
    if spec.backend in ("openai", "openai-like"):
        try:
            cls = _openai_class(spec.backend == "openai-like")
        except ImportError:
            raise _missing(spec.backend) from None
        kwargs: dict[str, Any] = dict(
            model=spec.model,
            api_key=spec.api_key,
            api_base=spec.base_url,
            timeout=spec.timeout,
            max_retries=0,  # LlamaIndex's own retry loop; the SDK retries instead
            sdk_max_retries=spec.max_retries,
            temperature=0.1,
        )
        if spec.backend == "openai-like":
            kwargs.update(is_chat_model=True, context_window=32_768)
        return cls(**kwargs)
    if spec.backend == "ollama":
        try:
            from llama_index.llms.ollama import Ollama
        except ImportError:
            raise _missing("ollama") from None
        return Ollama(
            model=spec.model,
            base_url=spec.base_url,
            request_timeout=spec.timeout,
            context_window=OLLAMA_CONTEXT_WINDOW,
            temperature=0.1,
        )
    raise LLMConfigError(f"Unknown RAG_LLM {spec.backend!r}")  # pragma: no cover


def make_llm(settings: Any) -> Any:
    """`build_llm(resolve_llm(settings))`: the LLM named by RAG_LLM, or None for `none`."""
    return build_llm(resolve_llm(settings))


def spec_for_llm(llm: Any, vision: Optional[bool] = None) -> LLMSpec:
    """A spec describing an LLM object built elsewhere (for messages and the vision guess)."""
    model = None
    try:
        model = llm.metadata.model_name
    except Exception:
        model = getattr(llm, "model", None)
    base_url = getattr(llm, "api_base", None) or getattr(llm, "base_url", None)
    api_key = getattr(llm, "api_key", None)
    return LLMSpec(
        backend=type(llm).__name__,
        model=model,
        base_url=str(base_url) if base_url else None,
        vision=is_vision_model(model) if vision is None else vision,
        vision_setting="auto" if vision is None else ("true" if vision else "false"),
        timeout=float(getattr(llm, "timeout", None) or getattr(llm, "request_timeout", None) or DEFAULT_TIMEOUT),
        api_key=api_key if isinstance(api_key, str) else None,
    )


# --------------------------------------------------------------------------- error mapping


def redact(text: str, secrets: list[str]) -> str:
    """Replace every secret (and its obvious variants) in text with ***."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: Optional[BaseException] = exc
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _status(exc: BaseException) -> Optional[int]:
    for item in _chain(exc):
        for attr in ("status_code", "status"):
            value = getattr(item, attr, None)
            if isinstance(value, int) and 100 <= value < 600:
                return value
        response = getattr(item, "response", None)
        value = getattr(response, "status_code", None)
        if isinstance(value, int):
            return value
    return None


def _detail(exc: BaseException) -> str:
    """The server's own message when there is one, else the exception text."""
    body = getattr(exc, "body", None)
    message = None
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        message = message or body.get("detail")
    elif isinstance(body, str):
        message = body
    if not message and isinstance(getattr(exc, "error", None), str):  # ollama.ResponseError
        message = exc.error  # type: ignore[attr-defined]
    text = str(message) if message else str(exc)
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


def _is_timeout(exc: BaseException) -> bool:
    for item in _chain(exc):
        names = _names(item)
        if isinstance(item, TimeoutError) or names & {"APITimeoutError", "TimeoutException"}:
            return True
    return False


def _is_connection(exc: BaseException) -> bool:
    for item in _chain(exc):
        names = _names(item)
        if isinstance(item, ConnectionError) or names & {
            "APIConnectionError", "ConnectError", "NetworkError", "RemoteProtocolError",
        }:
            return True
    return False


def _is_unreadable(exc: BaseException) -> bool:
    """A reply that is not the JSON the client expects (HTML, garbage, a body of the wrong shape)."""
    for item in _chain(exc):
        names = _names(item)
        if names & {"JSONDecodeError", "ValidationError", "DecodingError"}:
            return True
        if isinstance(item, (AttributeError, KeyError, TypeError)) and re.search(r"choices|message|content", str(item)):
            return True
    return False


_IMAGE_WORDS = re.compile(r"image|vision|multimodal|multi-modal|mmproj", re.IGNORECASE)


def is_image_refusal(error: BaseException) -> bool:
    return isinstance(error, ImagesRefusedError)


def llm_error(exc: BaseException, spec: LLMSpec, *, sent_images: bool = False) -> RagError:
    """Map an exception raised by an LLM call to a RagError with a clear, key-free message."""
    if isinstance(exc, RagError):
        return exc
    secrets = spec.secrets
    where = spec.where
    status = _status(exc)
    detail = redact(_detail(exc), secrets)

    if status is None and _is_timeout(exc):
        return LLMTimeoutError(
            f"The LLM server at {where} did not answer within {spec.timeout:g} seconds. "
            "Raise RAG_LLM_TIMEOUT, or ask with fewer sources (--top-k, --image-top-k) "
            "or a smaller model."
        )
    if status is None and _is_connection(exc):
        return LLMConnectionError(
            f"Cannot connect to the LLM server at {where} (RAG_LLM={spec.backend}). "
            "Is it running? Start it, or set RAG_LLM_BASE_URL to its address."
        )
    if status in (401, 403):
        return LLMAuthError(
            f"The LLM server at {where} rejected the API key (HTTP {status}). "
            "Set a valid key in RAG_LLM_API_KEY (or OPENAI_API_KEY for RAG_LLM=openai)."
        )
    if status is not None and sent_images and 400 <= status < 600 and _IMAGE_WORDS.search(detail):
        error = ImagesRefusedError(
            f"The model {spec.model!r} at {where} refused the images (HTTP {status}: {detail}). "
            "Use a vision model (for example gpt-4o-mini, qwen2.5vl or llava), or set "
            "RAG_LLM_VISION=false to send the image captions instead of the pixels."
        )
        error.status = status  # type: ignore[attr-defined]
        error.detail = detail  # type: ignore[attr-defined]
        return error
    if status == 404:
        hint = (
            f" For Ollama, run: ollama pull {spec.model}"
            if spec.backend == "ollama"
            else ""
        )
        return LLMModelNotFoundError(
            f"The LLM server at {where} has no model {spec.model!r} (HTTP 404: {detail}). "
            f"Set RAG_LLM_MODEL to a model it serves.{hint}"
        )
    if status is not None:
        return LLMServerError(f"The LLM server at {where} answered HTTP {status}: {detail}")
    if _is_unreadable(exc):
        return LLMReplyError(
            f"The LLM server at {where} answered with something that is not an OpenAI-compatible "
            f"reply ({type(exc).__name__}: {detail}). Check RAG_LLM_BASE_URL: it should be the server's "
            "OpenAI-compatible address (often ending in /v1)."
        )
    return LLMError(
        f"The call to the LLM at {where} failed ({type(exc).__name__}): {detail}"
    )
