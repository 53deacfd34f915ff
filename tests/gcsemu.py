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


def _install(name: str, wrap) -> None:
    """Replace the emulator's handler `objects.<name>` by `wrap(plain)`, once per process, wherever it is routed."""
    from gcp_storage_emulator import server
    from gcp_storage_emulator.handlers import objects

    plain = getattr(objects, name)
    if getattr(plain, "jaxadapt_wrapped", False):
        return
    handler = wrap(plain)
    handler.jaxadapt_wrapped = True
    setattr(objects, name, handler)
    for _, table in server.HANDLERS:
        for method, routed in list(table.items()):
            if routed is plain:
                table[method] = handler


def _generation(storage, bucket: str, name: str | None) -> str:
    """The object's generation, "0" when there is none (as ifGenerationMatch=0 means "absent")."""
    try:
        return str(storage.get_file_obj(bucket, name)["generation"])
    except Exception:  # noqa: BLE001 (the emulator's NotFound and a missing name alike)
        return "0"


def _add_generation_header(plain):
    def download(request, response, storage, *args, **kwargs):
        generation = _generation(storage, request.params["bucket_name"], request.params["object_id"])
        if generation != "0":  # a missing object: the plain handler answers 404
            response["x-goog-generation"] = generation
        return plain(request, response, storage, *args, **kwargs)
    return download


def _honour_upload_precondition(plain):
    from http import HTTPStatus

    def insert(request, response, storage, *args, **kwargs):
        want = request.query.get("ifGenerationMatch")
        if want:
            name = (request.query.get("name") or [None])[0]
            if name is None and isinstance(request.data, dict):
                name = (request.data.get("meta") or request.data).get("name")
            if _generation(storage, request.params["bucket_name"], name) != want[0]:  # "0": create only
                response.status = HTTPStatus.PRECONDITION_FAILED
                return None
        return plain(request, response, storage, *args, **kwargs)
    return insert


def _honour_delete_precondition(plain):
    from http import HTTPStatus

    def delete(request, response, storage, *args, **kwargs):
        want = request.query.get("ifGenerationMatch")
        if want:
            generation = _generation(storage, request.params["bucket_name"], request.params["object_id"])
            if generation not in ("0", want[0]):  # absent: the plain handler answers 404
                response.status = HTTPStatus.PRECONDITION_FAILED
                return None
        return plain(request, response, storage, *args, **kwargs)
    return delete


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

    _install("download", _add_generation_header)  # what `objects.get` calls for ?alt=media
    _install("insert", _honour_upload_precondition)
    _install("delete", _honour_delete_precondition)
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
