"""Node -> Qdrant payload, the stock LlamaIndex layout built with less Python work.

LlamaIndex's ``node_to_metadata_dict`` dumps the whole node (its embedding too) to
Python objects, then encodes them again with the ``json`` module. For 512-d
embeddings that is most of an embedded store's upsert time. :func:`node_payload`
writes the same payload (same keys, same values, the same ``_node_content``
document) from one pydantic JSON dump of the node without its embedding; the only
difference is that ``_node_content`` is written without spaces after separators,
which every JSON reader (LlamaIndex's ``metadata_dict_to_node`` included) ignores.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, Dict

from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.utils import _validate_is_flat_dict

#: Namespace for mapping non-UUID node ids to point ids (uuid5). Never change it:
#: existing stores would no longer find their points by node id.
NODE_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "rag.stores.edge/node-id")

_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_JSON_SCALARS = (str, int, float, bool, type(None))


def point_id_for(node_id: str) -> str:
    """The Qdrant point id for a LlamaIndex node id.

    UUID strings are used as they are (in canonical form); anything else is mapped
    deterministically with uuid5, so the same node id always lands on the same point.
    """
    node_id = str(node_id)
    if _CANONICAL_UUID.fullmatch(node_id):
        return node_id
    try:
        return str(uuid.UUID(node_id))
    except ValueError:
        return str(uuid.uuid5(NODE_ID_NAMESPACE, node_id))


def node_payload(node: BaseNode, flat_metadata: bool = False) -> Dict[str, Any]:
    """The payload ``node_to_metadata_dict(node)`` gives, without the double encoding.

    Top level: the node's metadata (as JSON values), then ``_node_content`` (the node
    as JSON, embedding null), ``_node_type``, ``document_id``, ``doc_id`` and
    ``ref_doc_id``. Pure: reads the node, changes nothing.
    """
    content = node.model_copy(update={"embedding": None}).model_dump_json()
    if all(isinstance(k, str) and isinstance(v, _JSON_SCALARS) for k, v in node.metadata.items()):
        payload = dict(node.metadata)
    else:  # dates, tuples, nested values...: take them as pydantic wrote them
        payload = json.loads(content)["metadata"]
    if flat_metadata:
        _validate_is_flat_dict(payload)
    ref_doc_id = node.ref_doc_id or "None"
    payload["_node_content"] = content
    payload["_node_type"] = node.class_name()
    payload["document_id"] = ref_doc_id
    payload["doc_id"] = ref_doc_id
    payload["ref_doc_id"] = ref_doc_id
    return payload
