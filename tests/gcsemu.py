"""A GCS emulator on localhost for the tests (gcp-storage-emulator, in memory), with every client pointed at it:
gcsfs / etils.epath (STORAGE_EMULATOR_HOST), orbax's tensorstore (TENSORSTORE_GCS_HTTP_URL, a test token) and
tensorboardX's google-cloud-storage writer.

One fidelity fix: real GCS sends an object's generation in the `x-goog-generation` header of a download, and
tensorstore's conditional writes (orbax's OCDBT manifest, rewritten at every checkpoint) depend on it; the emulator
leaves it out, so its download handler is wrapped to add it.
"""

from __future__ import annotations

import os
import socket
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


def emulated_gcs(bucket: str) -> Iterator[tuple[object, dict]]:
    """Within the generator: (gcsfs filesystem, environment for subprocesses), with `bucket` created."""
    emulator = pytest.importorskip("gcp_storage_emulator.server")
    import fsspec

    _add_generation_header()
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    server = emulator.create_server("localhost", port, in_memory=True, default_bucket=bucket)
    server.start()
    url = f"http://localhost:{port}"
    env = {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url, "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test",
           "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "NO_GCE_CHECK": "true", "GOOGLE_CLOUD_PROJECT": "test"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield fsspec.filesystem("gs", skip_instance_cache=True), dict(os.environ)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()
