"""The change files' columns, shared by the generator, the runners and the verifier (no heavy imports)."""

from __future__ import annotations

KEY = "id"
SEQUENCE = "seq"
CHANGE_TYPE = "_change_request_type"
# The user's columns and the DuckDB type each is compared as.
USER_COLUMNS = {
    "id": "BIGINT",
    "seq": "BIGINT",
    "name": "VARCHAR",
    "category": "VARCHAR",
    "amount": "DOUBLE",
    "qty": "BIGINT",
}
