"""A GCS emulator on localhost for the tests (gcp-storage-emulator, in memory), with every client pointed at it:
gcsfs / etils.epath (STORAGE_EMULATOR_HOST), orbax's tensorstore (TENSORSTORE_GCS_HTTP_URL, a test token) and
tensorboardX's google-cloud-storage writer.

Two fidelity fixes: real GCS sends an object's generation in the `x-goog-generation` header of a download, and
tensorstore's conditional writes (orbax's OCDBT manifest, rewritten at every checkpoint) depend on it; the emulator
leaves it out, so its download handler is wrapped to add it. And real GCS refuses an upload or a delete with
`ifGenerationMatch=G` with 412 unless the object's generation is G (0: no object, a create-only upload), which the
run-dir lease relies on for every write; the emulator ignores the condition, so its upload and delete handlers are
wrapped to check it.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator

import pytest


def _add_generation_header() -> None:
    from gcp_storage_emulator import server
    from gcp_storage_emulator.handlers import objects

    plain = objects.download
    if getattr(plain, "adds_generation", False):
        return

    def download(request, response, storage, *args, **kwargs):
        try:
            obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
            response["x-goog-generation"] = str(obj["generation"])
        except Exception:  # a missing object: the plain handler answers 404
            pass
        return plain(request, response, storage, *args, **kwargs)

    download.adds_generation = True
    objects.download = download  # what `objects.get` calls for ?alt=media
    for _, table in server.HANDLERS:
        for method, handler in list(table.items()):
            if handler is plain:
                table[method] = download


def _honour_upload_precondition() -> None:
    from http import HTTPStatus

    from gcp_storage_emulator import server
    from gcp_storage_emulator.handlers import objects

    plain = objects.insert
    if getattr(plain, "conditional", False):
        return

    def insert(request, response, storage, *args, **kwargs):
        want = request.query.get("ifGenerationMatch")
        if want:
            name = (request.query.get("name") or [None])[0]
            if name is None and isinstance(request.data, dict):
                name = (request.data.get("meta") or request.data).get("name")
            try:
                generation = str(storage.get_file_obj(request.params["bucket_name"], name)["generation"])
            except Exception:  # absent
                generation = "0"
            if generation != want[0]:  # "0": create only; else only over that generation
                response.status = HTTPStatus.PRECONDITION_FAILED
                return None
        return plain(request, response, storage, *args, **kwargs)

    insert.conditional = True
    objects.insert = insert
    for _, table in server.HANDLERS:
        for method, handler in list(table.items()):
            if handler is plain:
                table[method] = insert


def _honour_delete_precondition() -> None:
    from http import HTTPStatus

    from gcp_storage_emulator import server
    from gcp_storage_emulator.handlers import objects

    plain = objects.delete
    if getattr(plain, "conditional", False):
        return

    def delete(request, response, storage, *args, **kwargs):
        want = request.query.get("ifGenerationMatch")
        if want:
            try:
                obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
            except Exception:  # absent: the plain handler answers 404
                return plain(request, response, storage, *args, **kwargs)
            if str(obj["generation"]) != want[0]:
                response.status = HTTPStatus.PRECONDITION_FAILED
                return None
        return plain(request, response, storage, *args, **kwargs)

    delete.conditional = True
    objects.delete = delete
    for _, table in server.HANDLERS:
        for method, handler in list(table.items()):
            if handler is plain:
                table[method] = delete


def _quiet_disconnects(httpd) -> None:
    """A client that closes a connection early (gcsfs does, after a ranged read) is not an error worth a traceback
    on stderr, where it would mix with the one-line errors the tests read."""
    plain = httpd.handle_error

    def handle_error(request, client_address):
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            plain(request, client_address)

    httpd.handle_error = handle_error


def emulated_gcs(bucket: str) -> Iterator[tuple[object, dict]]:
    """Within the generator: (gcsfs filesystem, environment for subprocesses), with `bucket` created.

    gcsfs caches its filesystems, each bound to the endpoint it was made for; the cache is cleared on the way in and
    out, so code run in this process (`main([...])`) talks to this emulator, not to one an earlier module started."""
    emulator = pytest.importorskip("gcp_storage_emulator.server")
    import fsspec
    import gcsfs

    _add_generation_header()
    _honour_upload_precondition()
    _honour_delete_precondition()
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    server = emulator.create_server("localhost", port, in_memory=True, default_bucket=bucket)
    server.start()
    _quiet_disconnects(server._api._httpd)
    url = f"http://localhost:{port}"
    env = {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url, "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test",
           "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "NO_GCE_CHECK": "true", "GOOGLE_CLOUD_PROJECT": "test"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    gcsfs.GCSFileSystem.clear_instance_cache()
    try:
        yield fsspec.filesystem("gs", skip_instance_cache=True), dict(os.environ)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        gcsfs.GCSFileSystem.clear_instance_cache()
        server.stop()
