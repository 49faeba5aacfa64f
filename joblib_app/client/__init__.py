"""The synchronous worker SDK: register jobs and providers, claim and run tasks.

```python
from joblib_app.client import Category, Extension, JobManager

class Rotate(Extension):
    category = Category.MODIFIER
    angle: float = 0.0

    def run(self, vis, **kwargs):
        ...

with JobManager("http://localhost:8000/v1/joblib", token="...", execute=lambda t: t.run()) as m:
    m.register(Rotate)
    m.wait()
```
"""

from joblib_app.client.errors import (
    ApiError,
    Conflict,
    Forbidden,
    JoblibClientError,
    NotFound,
    PayloadTooLarge,
    ServerUnreachable,
    ServiceUnavailable,
    WorkerGone,
)
from joblib_app.client.handles import TaskCancelled, TaskFailed, TaskHandle
from joblib_app.client.manager import JobManager
from joblib_app.client.models import ClaimedTask
from joblib_app.client.runner import current_task
from joblib_app.client.state import StopCause
from joblib_app.extension import Category, Extension, Provider

__all__ = [
    "ApiError",
    "Category",
    "ClaimedTask",
    "Conflict",
    "Extension",
    "Forbidden",
    "JobManager",
    "JoblibClientError",
    "NotFound",
    "PayloadTooLarge",
    "Provider",
    "ServerUnreachable",
    "ServiceUnavailable",
    "StopCause",
    "TaskCancelled",
    "TaskFailed",
    "TaskHandle",
    "WorkerGone",
    "current_task",
]
