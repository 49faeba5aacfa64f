"""What a job and a provider are, as Python classes shared by workers and the server."""

from __future__ import annotations

import enum
from typing import Any, ClassVar

from pydantic import BaseModel


class Category(enum.StrEnum):
    """The default job categories."""

    MODIFIER = "modifiers"
    SELECTION = "selections"
    ANALYSIS = "analysis"


class Extension(BaseModel):
    """A job a worker (or the server, for ``@internal``) can run.

    Fields are the job's parameters; the JSON schema of the model is what gets registered.
    Subclasses set ``category`` and implement :meth:`run`.
    """

    category: ClassVar[str] = Category.MODIFIER.value

    def run(self, vis: Any, **kwargs: Any) -> Any:
        """Do the work; the return value (JSON data, or None) becomes the task's result.

        ``vis`` is whatever the runner passes (``None`` by default).
        """
        raise NotImplementedError(f"{type(self).__name__}.run is not implemented")


class Provider(BaseModel):
    """A data source a worker serves on request.

    Fields are the read parameters. ``content_type`` says what :meth:`read` returns:
    JSON-encodable data for ``application/json``, raw ``bytes`` otherwise.
    """

    category: ClassVar[str] = "data"
    content_type: ClassVar[str] = "application/json"

    def read(self, handler: Any) -> Any:
        """Produce the data for these parameters from ``handler``."""
        raise NotImplementedError(f"{type(self).__name__}.read is not implemented")


def category_of(cls: type[Extension] | type[Provider]) -> str:
    """The category string of an extension or provider class."""
    category = cls.category
    return category.value if isinstance(category, enum.Enum) else str(category)
