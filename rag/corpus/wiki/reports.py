"""What a fetch did: one report per image, per requested title, and for the whole run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

# Article statuses that mean nothing usable was fetched for the title.
PAGE_FAILURES = frozenset({"missing", "disambiguation", "invalid", "error"})
IMAGE_STATUSES = ("saved", "present", "dropped", "duplicate", "failed")


@dataclass
class ImageReport:
    """What happened to one image: saved, present (kept from a previous run), dropped, duplicate, failed."""

    file_name: str
    status: str
    reason: Optional[str] = None
    path: Optional[str] = None  # relative to the output folder
    bytes: Optional[int] = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class ArticleReport:
    """What happened to one requested title.

    status: "fetched" (text and images), "partial" (text, but some images failed),
    "duplicate" (same page as an earlier title of this run), or a failure: "missing",
    "disambiguation" (see `candidates`), "invalid" (not a usable title), "error".
    """

    requested: str
    status: str = "error"
    title: Optional[str] = None
    url: Optional[str] = None
    page_id: Optional[int] = None
    revision_id: Optional[int] = None
    folder: Optional[str] = None
    text: Optional[str] = None  # "fetched", "unchanged" (same revision on disk) or None
    error: Optional[str] = None
    candidates: list[str] = field(default_factory=list)
    images: list[ImageReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """True when nothing usable was fetched for this title."""
        return self.status in PAGE_FAILURES

    def count(self, status: str) -> int:
        """How many of this article's images ended with `status`."""
        return sum(1 for image in self.images if image.status == status)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["images"] = [image.to_dict() for image in self.images]
        data["failed"] = self.failed
        data["counts"] = {s: self.count(s) for s in IMAGE_STATUSES}
        return data


@dataclass
class FetchReport:
    """The outcome of one fetch: an ArticleReport per requested title."""

    out: str
    manifest: str
    api_url: str
    articles: list[ArticleReport] = field(default_factory=list)
    requests: int = 0
    started_at: str = ""
    finished_at: str = ""

    @property
    def failed(self) -> list[ArticleReport]:
        return [a for a in self.articles if a.failed]

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def exit_code(self) -> int:
        """0 when every title gave an article, 1 when at least one failed entirely."""
        return 0 if self.ok else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "exit_code": self.exit_code,
            "out": self.out,
            "manifest": self.manifest,
            "api_url": self.api_url,
            "requests": self.requests,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "articles": [a.to_dict() for a in self.articles],
            "totals": {
                "articles": len(self.articles),
                "failed": len(self.failed),
                **{
                    f"images_{s}": sum(a.count(s) for a in self.articles)
                    for s in IMAGE_STATUSES
                },
            },
        }
