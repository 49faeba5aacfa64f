"""What this worker serves (its id, jobs and providers), and putting that on the server."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from joblib_app.client.errors import JoblibClientError
from joblib_app.client.models import JobRegistration, ProviderRegistration
from joblib_app.client.realtime import RoomJoinError

if TYPE_CHECKING:
    from joblib_app.client.http import ApiClient
    from joblib_app.client.realtime import SocketLink

logger = logging.getLogger(__name__)


class Registry:
    """The worker id and its registrations, guarded by :attr:`lock`.

    The lock is re-entrant: registering creates the worker on first use, and the
    re-registration after an outage holds it across every registration it repeats.
    """

    def __init__(self, api: ApiClient) -> None:
        self.lock = threading.RLock()
        self._api = api
        self._link: SocketLink | None = None
        self._worker_id: str | None = None
        self._jobs: dict[str, JobRegistration] = {}
        self._providers: dict[str, ProviderRegistration] = {}

    # -- reading ---------------------------------------------------------------------------

    @property
    def worker_id(self) -> str | None:
        """The server's id of this worker, once one exists."""
        return self._worker_id

    def require_worker(self) -> str:
        """The worker id; raises if no worker was created yet."""
        worker_id = self._worker_id
        if worker_id is None:
            raise JoblibClientError("no worker yet: call create_worker() or register a job")
        return worker_id

    def job(self, job_full_name: str) -> JobRegistration | None:
        """The registration of a job served here, by full name."""
        return self._jobs.get(job_full_name)

    def job_names(self) -> list[str]:
        """The full names of the jobs served here, in registration order."""
        return list(self._jobs)

    def provider(self, provider_full_name: str) -> ProviderRegistration | None:
        """The registration of a provider served here, by full name."""
        return self._providers.get(provider_full_name)

    def providers(self) -> dict[str, ProviderRegistration]:
        """A copy of the provider registrations, by full name."""
        with self.lock:
            return dict(self._providers)

    # -- changing --------------------------------------------------------------------------

    def use_link(self, link: SocketLink) -> None:
        """Join (and leave) the Socket.IO rooms of what is registered over ``link``."""
        self._link = link

    def set_worker(self, worker_id: str) -> None:
        """Take ``worker_id`` as this worker's id."""
        with self.lock:
            self._worker_id = worker_id

    def add_job(
        self, registration: JobRegistration, worker_id: str, *, retry_for: float | None
    ) -> None:
        """Register a job for ``worker_id`` on the server and join its room."""
        with self.lock:
            self._api.put_job(registration, worker_id, retry_for=retry_for)
            self._jobs[registration.full_name] = registration
            if self._link is not None:
                self._link.join_job(registration.full_name, worker_id)

    def add_provider(
        self, registration: ProviderRegistration, worker_id: str, *, retry_for: float | None
    ) -> str:
        """Register a provider for ``worker_id`` and join its room; returns its id."""
        with self.lock:
            registration.provider_id = self._api.put_provider(
                registration, worker_id, retry_for=retry_for
            )
            self._providers[registration.full_name] = registration
            if self._link is not None:
                self._link.join_provider(registration.full_name, worker_id)
            return registration.provider_id

    def remove_provider(self, provider_full_name: str) -> None:
        """Stop serving a provider (leave its room, delete it); unknown names are ignored."""
        with self.lock:
            registration = self._providers.pop(provider_full_name, None)
            worker_id = self._worker_id
        if registration is None:
            return
        if self._link is not None and worker_id is not None:
            try:
                self._link.leave_provider(provider_full_name, worker_id)
            except RoomJoinError as exc:
                logger.warning("Could not leave provider room: %s", exc)
        self._api.delete_provider(registration.provider_id)

    def reattach(self, worker_id: str, *, retry_for: float | None) -> None:
        """Put every job and provider on the server again for ``worker_id``, rooms included.

        The server forgets a connection's rooms when it drops; the jobs and providers are
        re-put too, because a worker swept meanwhile took its last links with it.
        """
        with self.lock:
            for job in self._jobs.values():
                self._api.put_job(job, worker_id, retry_for=retry_for)
            for provider in self._providers.values():
                provider.provider_id = self._api.put_provider(
                    provider, worker_id, retry_for=retry_for
                )
            self._worker_id = worker_id
            if self._link is not None:
                for name in self._jobs:
                    self._link.join_job(name, worker_id)
                for name in self._providers:
                    self._link.join_provider(name, worker_id)

    def leave_rooms(self) -> None:
        """Leave every room (before the worker is deleted, which removes them anyway)."""
        with self.lock:
            worker_id = self._worker_id
            jobs, providers = list(self._jobs), list(self._providers)
        if self._link is None or worker_id is None or not self._link.connected:
            return
        try:
            for name in providers:
                self._link.leave_provider(name, worker_id)
            for name in jobs:
                self._link.leave_job(name, worker_id)
        except RoomJoinError as exc:
            logger.debug("Leaving rooms failed: %s", exc)
