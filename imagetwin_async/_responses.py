"""Pydantic response models for FastAPI services (re-exported by ``imagetwin_async.fastapi``).

The SDK's models are attrs classes, which FastAPI cannot use as ``response_model``. These
mirror them field for field (snake_case, as the SDK has them) and read an SDK object directly
(``from_attributes``), so a handler returns what the client gave it:

    @app.get("/papers/{scan_id}", response_model=ScanResultModel)
    async def paper(scan_id: str, client: ImagetwinClientDep) -> Any:
        return await client.wait_for_result(scan_id)
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from ._models import ScanOutcome

__all__ = ["ScanErrorModel", "ScanOutcomeModel", "ScanResultModel", "ScanStartedModel"]

_FROM_SDK = ConfigDict(from_attributes=True, frozen=True)


class ScanStartedModel(BaseModel):
    """``ScanStarted`` as an API answer: ``ScanStartedModel.model_validate(started)``."""

    model_config: ClassVar[ConfigDict] = _FROM_SDK

    scan_id: str = Field(description="Keep it to fetch the result.")
    message: str = ""


class ScanResultModel(BaseModel):
    """``ScanResult`` as an API answer: ``ScanResultModel.model_validate(result)``."""

    model_config: ClassVar[ConfigDict] = _FROM_SDK

    scan_id: str
    alteration_count: int = Field(ge=0)
    local_duplicate_count: int = Field(ge=0)
    extern_duplicate_count: int = Field(ge=0)
    pdf_report: str = Field(description="URL of the PDF report (public link).")
    result_url: str = Field(description="URL of the result page in Imagetwin.")
    min_score: float
    ai_image_count: int | None = None
    highest_score: float | None = None
    finding_count: int = Field(ge=0, description="All findings at or above min_score.")
    clean: bool = Field(description="True when the scan found nothing at or above min_score.")


class ScanErrorModel(BaseModel):
    """An ``ImagetwinError`` as data: its class name and message (never the API key)."""

    model_config: ClassVar[ConfigDict] = ConfigDict(frozen=True)

    type: str = Field(description="The error's class, e.g. InvalidUpload or ScanFailed.")
    message: str


class ScanOutcomeModel(BaseModel):
    """A batch item's ``ScanOutcome``: ``ScanOutcomeModel.from_outcome(outcome)``.

    ``source`` is the item as text (a path, or a list of paths for an image set).
    """

    model_config: ClassVar[ConfigDict] = ConfigDict(frozen=True)

    source: str | list[str]
    scan_id: str | None
    ok: bool
    result: ScanResultModel | None
    error: ScanErrorModel | None
    note: str | None = None

    @classmethod
    def from_outcome(cls, outcome: ScanOutcome[Any]) -> ScanOutcomeModel:
        source = outcome.source
        if isinstance(source, (list, tuple)):
            shown: str | list[str] = [_name(item) for item in source]
        else:
            shown = _name(source)
        return cls(
            source=shown,
            scan_id=outcome.scan_id,
            ok=outcome.ok,
            result=None
            if outcome.result is None
            else ScanResultModel.model_validate(outcome.result),
            error=None
            if outcome.error is None
            else ScanErrorModel(type=type(outcome.error).__name__, message=str(outcome.error)),
            note=outcome.note,
        )


def _name(item: object) -> str:
    """A path as text; in-memory content by its file name."""
    name = getattr(item, "filename", None) or getattr(item, "name", None)
    return str(name) if isinstance(name, str) and not isinstance(item, str) else str(item)
