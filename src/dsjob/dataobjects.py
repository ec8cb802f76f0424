"""Which objects under an input prefix are data: the rule the fan-out and the workflow share.

A folder marker (a key ending in ``/``), an empty object, and a hidden name (the
last path segment starts with ``.`` or ``_``: ``_SUCCESS``, ``_metadata`` and
``.crc`` files that Spark and Hadoop writers leave beside their parts) are not
mapped. The Step Functions workflow builds its "Data file?" Choice from the same
constants (infra/dsjob_infra/workflow.py); ASL cannot call this function, so
tests/infra/test_workflow_emulated.py runs one key list through both.
"""

from __future__ import annotations

#: How a hidden name starts; the workflow makes each one StringMatches pattern ("_*").
HIDDEN_NAME_STARTS = (".", "_")


def not_data(key: str, size: int) -> str:
    """Why an object under the prefix is not mapped ("" for a data object)."""
    name = key.rsplit("/", 1)[-1]
    if not name:
        return "folder marker"
    if name.startswith(HIDDEN_NAME_STARTS):
        return "hidden name"
    return "zero-size object" if size == 0 else ""
