"""`rag serve`: one process owns the index and serves a web page and a JSON API over `RagService`.

    from rag.server import ServerConfig, create_app
    app = create_app(service, ServerConfig())   # a FastAPI app; run it with uvicorn

`rag.server.run.serve()` is what the command runs: it loads the models once, advertises the
server in `<storage>/server.json`, serves until SIGTERM/Ctrl-C and cleans up.
"""

from rag.server.config import ServerConfig

__all__ = ["ServerConfig", "create_app"]


def create_app(*args, **kwargs):  # noqa: D103 - imported lazily: FastAPI is not needed to import rag
    from rag.server.app import create_app as _create

    return _create(*args, **kwargs)
