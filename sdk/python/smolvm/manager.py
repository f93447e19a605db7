"""SmolVMManager: listing and looking up VMs, snapshots, pools and images.

Mirrors the C++ ``smolvm::SmolVMManager`` (client/smolvm.h). Construction
sends nothing; each method is one RPC, except that the list methods follow
``next_page_token`` to the last page and return everything. Thread-safe
(it keeps no state besides the gRPC channel). A context manager::

    with SmolVMManager() as sdk:
        for snap in sdk.list_snapshots():
            print(snap.snapshot_id, snap.created_at)
        running = sdk.list_vms(labels={"team": "ci"}, statuses=["running"])
"""

import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, List, Mapping, Optional, Union

import grpc
from google.protobuf import json_format

from smolvm.connection import ClientOptions, ClosesOnExit, Connection
from smolvm.errors import DeadlineExceededError, InternalError, InvalidArgumentError
from smolvm.events import EventKind, EventStream, watch_events_request
from smolvm.progress import OperationProgress, ProgressCallback, call_with_progress
from smolvm.types import (BuiltImage, ForkOutcome, Image, Pool, SnapshotInfo,
                          SnapshotVerification, StatusLike, VMInfo, coerce_status, copy_labels)
from smolvm.v1 import (image_service_pb2, operation_service_pb2, pool_service_pb2,
                       snapshot_service_pb2, vm_service_pb2)

__all__ = ["SmolVMManager"]

# The largest page the daemon serves: 10,000 snapshots are 10 round trips.
LIST_PAGE_SIZE = 1000


class SmolVMManager(ClosesOnExit):
    """Lists and looks up VMs and snapshots, deletes snapshots, forks VMs
    from a snapshot, manages warm pools and images."""

    def __init__(self, options: Optional[ClientOptions] = None) -> None:
        self._connection = Connection(options)

    @property
    def connection(self) -> Connection:
        """The connection to smolvmd (its stubs give every RPC)."""
        return self._connection

    def close(self) -> None:
        """Releases the channel."""
        self._connection.close()

    def _pages(self, method: Callable[..., Any], request: Any, items: str) -> Iterator[Any]:
        """Yields the `items` of every page of a List RPC."""
        request.page_size = LIST_PAGE_SIZE
        while True:
            page = self._connection.call(method, request)
            yield from getattr(page, items)
            if not page.next_page_token:
                return
            # A daemon handing back the token it was given would loop forever.
            if page.next_page_token == request.page_token:
                raise InternalError(message=(
                    f"list: daemon returned the same page token twice: {page.next_page_token}"))
            request.page_token = page.next_page_token

    # --- Snapshots -----------------------------------------------------------

    def list_snapshots(self, vm_id: str = "", labels: Optional[Mapping[str, str]] = None,
                       image: str = "") -> List[SnapshotInfo]:
        """All snapshots ordered by snapshot_id, or those matching every
        filter given: taken from `vm_id`, carrying all of `labels` (the
        snapshot's own, ``SnapshotInfo.labels``), of `image` (as the VM was
        created with it, or its digest)."""
        conn = self._connection
        request = snapshot_service_pb2.ListSnapshotsRequest(vm_id=vm_id, image=image)
        copy_labels(labels, request.labels, "list snapshots")
        return [SnapshotInfo.from_proto(s)
                for s in self._pages(conn.snapshot.ListSnapshots, request, "snapshots")]

    def get_snapshot(self, snapshot_id: str) -> SnapshotInfo:
        """Snapshot `snapshot_id`; NotFoundError if there is none."""
        conn = self._connection
        request = snapshot_service_pb2.GetSnapshotRequest(snapshot_id=snapshot_id)
        return SnapshotInfo.from_proto(conn.call(conn.snapshot.GetSnapshot, request))

    def delete_snapshot(self, snapshot_id: str) -> None:
        """Removes snapshot `snapshot_id`; NotFoundError if there is none."""
        conn = self._connection
        conn.call(conn.snapshot.DeleteSnapshot,
                  snapshot_service_pb2.DeleteSnapshotRequest(snapshot_id=snapshot_id))

    def verify_snapshot(self, snapshot_id: str) -> SnapshotVerification:
        """Re-hashes every file of the snapshot (VerifySnapshot);
        DataLossError naming the first bad file if one changed."""
        conn = self._connection
        request = snapshot_service_pb2.VerifySnapshotRequest(snapshot_id=snapshot_id)
        return SnapshotVerification.from_proto(conn.call(conn.snapshot.VerifySnapshot, request))

    def fork_snapshot(self, snapshot_id: str, count: int, resume_vm: bool = True,
                      vm_id_prefix: str = "", *,
                      on_progress: Optional[ProgressCallback] = None) -> List[ForkOutcome]:
        """Restores `count` (1-128) independent clones of `snapshot_id` in
        one call (ForkSnapshot), each with a fresh identity, named
        ``<vm_id_prefix>-<n>`` ("" = ``<snapshot_id>-fork``). Raises only
        for a bad request; otherwise returns one outcome per clone, each with
        its VM or its own error. ``SmolVM.attach(outcome.vm_id)`` gives a
        handle on a clone."""
        conn = self._connection
        request = snapshot_service_pb2.ForkSnapshotRequest(
            snapshot_id=snapshot_id, count=count, resume_vm=resume_vm,
            vm_id_prefix=vm_id_prefix)
        response = call_with_progress(conn, conn.snapshot.ForkSnapshot, request, on_progress)
        return [ForkOutcome.from_proto(r, f"fork snapshot {snapshot_id}")
                for r in response.results]

    # --- VMs -----------------------------------------------------------------

    def list_vms(self, labels: Optional[Mapping[str, str]] = None,
                 statuses: Union[Iterable[StatusLike], StatusLike, None] = None,
                 image: str = "") -> List[VMInfo]:
        """All VMs ordered by vm_id, or those matching every filter given:
        carrying all of `labels` (``VMConfig.labels``), in any of `statuses`
        (``VmStatus`` values or their names, e.g. ``[VmStatus.RUNNING,
        "paused"]``; one alone is fine), of `image` (as given at create
        time, or its digest)."""
        conn = self._connection
        request = vm_service_pb2.ListVmsRequest(image=image)
        copy_labels(labels, request.labels, "list vms")
        if isinstance(statuses, (str, int)):  # One status (VmStatus is a str).
            statuses = [statuses]
        request.statuses.extend(coerce_status(s) for s in statuses or ())
        return [VMInfo.from_proto(v) for v in self._pages(conn.vm.ListVms, request, "vms")]

    def events(self, after_event_id: int = 0, follow: bool = False, *, vm_id: str = "",
               snapshot_id: str = "",
               kinds: Optional[Iterable[Union[EventKind, str, int]]] = None,
               timeout: Optional[float] = None) -> EventStream:
        """The caller's events after `after_event_id` (0 = from the oldest
        the daemon keeps), oldest first (WatchEvents): an iterator of
        :class:`~smolvm.events.Event`. With `follow` it goes on with new
        events as they happen until closed or `timeout` seconds (None or 0 =
        no limit). Only events of `vm_id` / `snapshot_id` / `kinds`
        ("vm_created", EventKind.VM_DELETED, ...) when given."""
        request = watch_events_request(after_event_id, follow, vm_id, snapshot_id, kinds)
        return EventStream(self._connection, request, timeout)

    def get_vm(self, vm_id: str) -> VMInfo:
        """VM `vm_id`; NotFoundError if there is none."""
        conn = self._connection
        return VMInfo.from_proto(conn.call(conn.vm.GetVm, vm_service_pb2.GetVmRequest(vm_id=vm_id)))

    # --- Warm pools (PoolService) --------------------------------------------

    def create_pool(self, pool_id: str, snapshot_id: str, size: int) -> Pool:
        """Keeps `size` (1-64) clones of the caller's snapshot restored and
        paused, for ``SmolVM.from_pool(pool_id)``. Returns at once; the pool
        fills in the background (``Pool.ready_vm_ids``)."""
        conn = self._connection
        request = pool_service_pb2.CreatePoolRequest(pool_id=pool_id, snapshot_id=snapshot_id,
                                                     size=size)
        return Pool.from_proto(conn.call(conn.pool.CreatePool, request))

    def get_pool(self, pool_id: str) -> Pool:
        """Pool `pool_id`; NotFoundError if there is none."""
        conn = self._connection
        return Pool.from_proto(conn.call(conn.pool.GetPool,
                                         pool_service_pb2.GetPoolRequest(pool_id=pool_id)))

    def wait_for_pool(self, pool_id: str, timeout: float = 600.0, *,
                      on_progress: Optional[ProgressCallback] = None) -> Pool:
        """Polls the pool (every 0.2 s) until all its members are ready and
        returns it; DeadlineExceededError (with the last refill error, if
        any) after `timeout` seconds. `on_progress` sees the fill as an
        OperationProgress of kind "CreatePool" (done of total "members")."""
        start = time.monotonic()
        started_at = datetime.now(timezone.utc)
        while True:
            pool = self.get_pool(pool_id)
            ready = len(pool.ready_vm_ids)
            full = ready >= pool.size
            if on_progress is not None:
                on_progress(OperationProgress(
                    operation_id=pool_id, kind="CreatePool", target=pool_id,
                    stage="filling the pool", done=min(ready, pool.size), total=pool.size,
                    unit="members", stage_number=1, finished=full, started_at=started_at,
                    updated_at=datetime.now(timezone.utc)))
            if full:
                return pool
            waited = time.monotonic() - start
            if waited >= timeout:
                last = f"; last refill error: {pool.last_error}" if pool.last_error else ""
                raise DeadlineExceededError(message=(
                    f"pool {pool_id}: {ready} of {pool.size} members ready after "
                    f"{waited:.1f}s{last}"))
            time.sleep(0.2)

    def get_operation(self, operation_id: str) -> OperationProgress:
        """The state of operation `operation_id` (OperationService): a call
        made with that operation id, running or finished recently."""
        conn = self._connection
        return OperationProgress.from_proto(conn.call(
            conn.operation.GetOperation,
            operation_service_pb2.GetOperationRequest(operation_id=operation_id)))

    def list_pools(self) -> List[Pool]:
        """The caller's pools."""
        conn = self._connection
        response = conn.call(conn.pool.ListPools, pool_service_pb2.ListPoolsRequest())
        return [Pool.from_proto(p) for p in response.pools]

    def delete_pool(self, pool_id: str) -> None:
        """Removes the pool and its unclaimed members; claimed VMs stay."""
        conn = self._connection
        conn.call(conn.pool.DeletePool, pool_service_pb2.DeletePoolRequest(pool_id=pool_id))

    # --- Images (ImageService) -----------------------------------------------

    def build_image(self, request: Union[image_service_pb2.BuildImageRequest, Mapping[str, Any]],
                    on_progress: Optional[Callable[[image_service_pb2.BuildProgress], None]] = None
                    ) -> BuiltImage:
        """Builds and names an image (BuildImage) and returns it once done.

        `request` is a ``smolvm.v1.image_service_pb2.BuildImageRequest`` or a
        dict of its fields, e.g. ``{"name": "tools", "debian": {"packages":
        ["git"]}}`` or ``{"name": "tiny", "minimal": True}``. `on_progress`
        sees each progress event. The deadline is the client timeout; when it
        passes the daemon stops the build and registers nothing.
        """
        if not isinstance(request, image_service_pb2.BuildImageRequest):
            try:
                request = json_format.ParseDict(dict(request),
                                                image_service_pb2.BuildImageRequest())
            except json_format.ParseError as e:
                raise InvalidArgumentError(message=f"build image: {e}") from None
        conn = self._connection
        conn.check()
        done: Optional[BuiltImage] = None
        try:
            for event in conn.image.BuildImage(request, timeout=conn.deadline(),
                                               metadata=conn.metadata()):
                if event.HasField("progress") and on_progress is not None:
                    on_progress(event.progress)
                if event.HasField("done"):
                    warm = (SnapshotInfo.from_proto(event.warm_snapshot)
                            if event.HasField("warm_snapshot") else None)
                    done = BuiltImage(Image.from_proto(event.done), warm)
        except grpc.RpcError as e:
            raise conn.convert(e) from None
        if done is None:
            raise InternalError(message=(
                f"build image {request.name}: the daemon ended the stream without the image"))
        return done

    def list_images(self) -> List[Image]:
        """The images this caller can use, oldest first."""
        conn = self._connection
        response = conn.call(conn.image.ListImages, image_service_pb2.ListImagesRequest())
        return [Image.from_proto(i) for i in response.images]

    def get_image(self, image: str) -> Image:
        """The image a name ("debian-python", "x:v2") or digest names."""
        conn = self._connection
        return Image.from_proto(conn.call(conn.image.GetImage,
                                          image_service_pb2.GetImageRequest(image=image)))

    def delete_image(self, image: str) -> bool:
        """Removes a name (and the image with its last name), or by digest
        the image; FailedPreconditionError while VMs or snapshots use it.
        Returns whether the image itself was deleted."""
        conn = self._connection
        response = conn.call(conn.image.DeleteImage,
                             image_service_pb2.DeleteImageRequest(image=image))
        return response.image_deleted

    def tag_image(self, image: str, name: str) -> Image:
        """Adds the name `name` to `image`."""
        conn = self._connection
        return Image.from_proto(conn.call(conn.image.TagImage,
                                          image_service_pb2.TagImageRequest(image=image, name=name)))
