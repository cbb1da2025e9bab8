"""HTML views of hits, answers and collections for Jupyter (see `rag.display.html`)."""

from rag.display.html import *  # noqa: F401,F403
from rag.display.html import __all__  # noqa: F401
