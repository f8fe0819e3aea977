"""Which agency callbacks a request takes, keeps, recognises again, or refuses.

An agency answers an accepted (202) call later, with a callback to a URL whose token names
the request, step and item. The callback can overtake the engine's own view of the call: the
agency accepted the first attempt and sent its callback at once, but that attempt's HTTP
answer never reached the workflow (a timeout, a worker killed mid-call), so the workflow is
still retrying the call when the callback arrives. Refusing it then loses it for good — the
agency is told "not expected" and does not send it again — and the request waits for its
deadline. So the rule is not "only while waiting for a callback" but "while the item's branch
has not ended"::

    the token's item is ...             the callback is ...                answer (HTTP)
    ──────────────────────────────────  ─────────────────────────────────  ────────────────────
    unknown (no call was made for it)   refused                            NotExpected (409)
    (any) and the callback is a copy    recognised: the first delivery's   already_received
      of the one it settled or keeps      answer was lost; nothing changes   (200)
    running: call in flight, retrying   kept; applied once the call's      accepted (200)
                                          answer is known (call_steps)
    waiting: for a callback, or for     handed to the waiting branch       accepted (200)
      the citizen's answer
    running or waiting, and another     refused                            NotExpected (409)
      callback is already kept
    ended: completed, failed,           refused                            NotExpected (409)
      cancelled, compensated
    (any) a rejection without reason    refused                            InvalidAnswer (422)

*A copy* is a callback with the same :meth:`~runtime.messages.AgencyCallback.digest` — its
content and the round of information it answers — as the one the item last settled
(``ItemOutcome.callback_digest``, carried across continue-as-new) or the one kept for it.
The round is part of it because an agency may legitimately send the same body again in a
later round (asking the same question twice). The one case it cannot tell apart: a copy of
an earlier round's callback arriving after the citizen answered and the agency accepted the
next round is taken as that round's answer — an agency's redelivery happens right after its
answer was lost, long before a citizen answers, so this is left as it is.

A refused callback never enters history (validators run before an update is accepted); a
copy does (an accepted update that changes nothing), so the agency gets a success and stops
sending it. Validators do not run on replay; :func:`is_copy` runs in the handler too, and
gives the same answer there because it reads only workflow state.
"""

from __future__ import annotations

from typing import Literal

from temporalio.exceptions import ApplicationError

from runtime.messages import INVALID_ANSWER, NOT_EXPECTED, AgencyCallback, ItemOutcome
from workflows.state import Inbox, RequestState

LIVE = ("running", "waiting")
"""Item states whose branch has not ended: a callback for them is taken (and kept if early)."""

Admission = Literal["new", "copy"]


def is_copy(item: ItemOutcome, inbox: Inbox, callback: AgencyCallback) -> bool:
    """The callback is one this item already settled or keeps (its answer was lost)."""
    digest = callback.digest(item.information_rounds)
    if digest == item.callback_digest:
        return True
    kept = inbox.kept_callback(callback.step_id, callback.item_key)
    return kept is not None and kept.digest(item.information_rounds) == digest


def admit(state: RequestState, inbox: Inbox, callback: AgencyCallback) -> Admission:
    """Whether the request takes this callback: new, or a copy of one it has.

    Raises:
        ApplicationError: ``NotExpected`` (no call for that item, its branch ended, or
            another callback is kept for it) or ``InvalidAnswer`` (a rejection without a
            reason): the update is refused and never enters history.
    """
    where = f"step {callback.step_id!r}" + (
        f" item {callback.item_key!r}" if callback.item_key else "")
    item = state.find_item(callback.step_id, callback.item_key)
    if item is None:
        raise ApplicationError(
            f"no callback is expected for {where}: no call was made for it", type=NOT_EXPECTED)
    if callback.status == "rejected" and not callback.reason:
        raise ApplicationError("a rejection needs a reason", type=INVALID_ANSWER)
    if is_copy(item, inbox, callback):
        return "copy"
    if item.status not in LIVE:
        raise ApplicationError(
            f"no callback is expected for {where}: it was already answered or has ended "
            f"({item.status})", type=NOT_EXPECTED)
    if inbox.kept_callback(callback.step_id, callback.item_key) is not None:
        raise ApplicationError(
            f"a different callback for {where} has arrived already and is kept until the "
            "agency's answer to the call is known", type=NOT_EXPECTED)
    return "new"
