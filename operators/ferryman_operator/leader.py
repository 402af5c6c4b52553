"""Leader election through a ``coordination.k8s.io/v1`` Lease, as client-go's leaderelection does it.

Every replica watches and keeps its caches warm; only the holder of the Lease reconciles. The holder
renews every ``lease_seconds / 3``; another replica takes over once it has seen the same lease record
unchanged for ``lease_seconds`` (measured on its own monotonic clock, so clock skew between nodes does
not matter). Every write to the Lease carries its ``resourceVersion``, so two candidates cannot both win.
A leader that cannot renew for ``lease_seconds`` stops acting at once; on shutdown it gives the Lease
up so a standby takes over without waiting for expiry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ferryman_operator.kube.client import LEASE, ApiError, KubeClient

log = logging.getLogger("ferryman.operator.leader")


def micro_time(ts: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if ts is None else ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        kube: KubeClient,
        *,
        name: str,
        namespace: str,
        identity: str,
        lease_seconds: float,
        on_change: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.lease_seconds = lease_seconds
        self.on_change = on_change
        self.clock = clock
        self._leader = False
        self._renewed_at = 0.0
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self.holder: str | None = None
        self._lease: dict[str, Any] | None = None  # the Lease as our last write returned it
        self.renewals = 0  # successful writes of the Lease (acquisitions and renewals)

    @property
    def is_leader(self) -> bool:
        # a leader that has not renewed within the lease duration must assume someone else took over
        return self._leader and self.clock() - self._renewed_at < self.lease_seconds

    def _set(self, leader: bool) -> None:
        if leader != self._leader:
            self._leader = leader
            log.warning("%s: %s", self.identity, "became the leader" if leader else "is no longer the leader")
            if self.on_change is not None:
                self.on_change(leader)

    async def run(self) -> None:
        """Try to acquire or renew forever (cancel the task to stop)."""
        while True:
            try:
                self._set(await self.try_acquire_or_renew())
            except ApiError as err:
                log.warning("%s: lease %s/%s: %s", self.identity, self.namespace, self.name, err)
                if not self.is_leader:
                    self._set(False)
            await asyncio.sleep(self.lease_seconds / (3.0 if self._leader else 4.0))

    async def try_acquire_or_renew(self) -> bool:
        if self._leader and self._lease is not None:
            # the holder renews from the Lease its last write returned: no GET per renewal
            spec = {**(self._lease.get("spec") or {}), "renewTime": micro_time()}
            try:
                self._lease = await self.kube.replace({**self._lease, "spec": spec})
            except ApiError as err:
                self._lease = None
                if not err.conflict:
                    raise
            else:
                self._renewed_at = self.clock()
                self.renewals += 1
                return True
        now_wall = time.time()
        lease = await self.kube.get(LEASE, self.namespace, self.name)
        duration = max(round(self.lease_seconds), 1)
        if lease is None:
            try:
                self._lease = await self.kube.create(
                    {
                        "apiVersion": "coordination.k8s.io/v1",
                        "kind": "Lease",
                        "metadata": {"name": self.name, "namespace": self.namespace},
                        "spec": {
                            "holderIdentity": self.identity,
                            "leaseDurationSeconds": duration,
                            "acquireTime": micro_time(now_wall),
                            "renewTime": micro_time(now_wall),
                            "leaseTransitions": 0,
                        },
                    }
                )
            except ApiError as err:
                if err.status == 409:  # created by another candidate a moment ago
                    return False
                raise
            self._renewed_at = self.clock()
            self.renewals += 1
            self.holder = self.identity
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or None
        record = (
            holder,
            spec.get("renewTime"),
            spec.get("leaseDurationSeconds"),
            spec.get("leaseTransitions"),
        )
        if record != self._observed:
            self._observed, self._observed_at = record, self.clock()
        self.holder = holder
        expired = self.clock() - self._observed_at >= float(spec.get("leaseDurationSeconds") or duration)
        if holder not in (None, self.identity) and not expired:
            return False
        new_spec = dict(spec)
        new_spec.update(
            holderIdentity=self.identity, leaseDurationSeconds=duration, renewTime=micro_time(now_wall)
        )
        if holder != self.identity:
            new_spec["acquireTime"] = micro_time(now_wall)
            new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        try:
            # carries resourceVersion: 409 if we lost a race
            self._lease = await self.kube.replace({**lease, "spec": new_spec})
        except ApiError as err:
            if err.conflict:
                return False
            raise
        self._renewed_at = self.clock()
        self.renewals += 1
        self.holder = self.identity
        return True

    async def release(self) -> None:
        """Give the lease up (shutdown), so a standby takes over at its next try."""
        if not self._leader:
            return
        self._set(False)
        try:
            lease = await self.kube.get(LEASE, self.namespace, self.name)
            if lease is not None and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                spec = {k: v for k, v in lease["spec"].items() if k not in ("holderIdentity", "acquireTime")}
                spec["leaseDurationSeconds"] = 1
                await self.kube.replace({**lease, "spec": spec})
                log.warning("%s: released the lease", self.identity)
        except ApiError as err:
            log.warning("%s: could not release the lease: %s", self.identity, err)
