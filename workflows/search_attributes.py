"""The search attributes operators filter runs by in the Temporal UI.

They stay plaintext on the server (the payload codec does not cover them), so none may ever
hold personal data: only service ids, agency ids, statuses, versions and times.
The set fits the dev server's SQLite visibility limits (10 Keyword, 3 KeywordList, ...).
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

CITIZEN_SERVICE = SearchAttributeKey.for_keyword("CitizenService")
DEFINITION_VERSION = SearchAttributeKey.for_keyword("DefinitionVersion")
REQUEST_STATUS = SearchAttributeKey.for_keyword("RequestStatus")
AGENCIES_INVOLVED = SearchAttributeKey.for_keyword_list("AgenciesInvolved")
AGENCIES_AWAITED = SearchAttributeKey.for_keyword_list("AgenciesAwaited")
ESCALATED = SearchAttributeKey.for_bool("Escalated")
SUBMITTED_AT = SearchAttributeKey.for_datetime("SubmittedAt")

ALL = (
    CITIZEN_SERVICE,
    DEFINITION_VERSION,
    REQUEST_STATUS,
    AGENCIES_INVOLVED,
    AGENCIES_AWAITED,
    ESCALATED,
    SUBMITTED_AT,
)


def dev_server_flags() -> list[str]:
    """``--search-attribute NAME=Type`` flags registering :data:`ALL` on the dev server."""
    type_names = {
        "KEYWORD": "Keyword", "KEYWORD_LIST": "KeywordList", "BOOL": "Bool",
        "DATETIME": "Datetime", "INT": "Int", "FLOAT": "Double", "TEXT": "Text",
    }
    flags: list[str] = []
    for key in ALL:
        flags += ["--search-attribute", f"{key.name}={type_names[key.indexed_value_type.name]}"]
    return flags
