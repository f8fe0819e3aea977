"""How long each activity may take, how it retries, and what the Temporal UI calls it.

One place for the options of the five activities a request starts:

==================  =====================================  ====================================
activity            timeouts                               retries
==================  =====================================  ====================================
``call_agency``     the step's ``timeout`` + 5 s a call    the step's ``retry``; the agency's
                    (the HTTP call gives up first, so the  final answers (``AgencyRejected``,
                    activity reports why)                  protocol errors, misconfiguration)
                                                           never retry
``notify_operator`` 30 s a try                             forever, at most every 5 minutes:
                                                           an escalation must reach someone
``send_citizen_``   60 s a try (the SMTP conversation      every 10 s at first, then at most
``email``           gives up after 20 s), 6 hours in all   every 10 minutes; a refusal for good
                                                           (5xx) never retries; then the request
                                                           goes on without it
``record_request``  30 s a try, 2 minutes in all           local activity; then the request
                                                           goes on (the read model is a view)
``record_progress`` 10 s a try, 30 s in all                local activity; then the branch goes
                                                           on (the end record catches up): a
                                                           read model that is down delays a
                                                           message's branch by 30 s at most
==================  =====================================  ====================================

Summaries name the step, the agency, the operation and the item, so the Event History reads
as the request's story; they are encrypted by the codec with the rest of the payloads.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from definitions.models import CallStep, RetrySpec
from runtime.messages import MAIL_REFUSED, NON_RETRYABLE_ERRORS, AgencyCallInput

CALL_GRACE = timedelta(seconds=5)
"""Time on top of the step's HTTP timeout for the activity to report its own failure."""
NOTICE_TIMEOUT = timedelta(seconds=30)
NOTICE_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=5))
RECORD_TIMEOUT = timedelta(seconds=30)
RECORD_GIVE_UP = timedelta(minutes=2)
MAIL_TIMEOUT = timedelta(seconds=60)
MAIL_GIVE_UP = timedelta(hours=6)
MAIL_RETRY = RetryPolicy(initial_interval=timedelta(seconds=10), backoff_coefficient=2.0,
                         maximum_interval=timedelta(minutes=10),
                         non_retryable_error_types=[MAIL_REFUSED])
PROGRESS_TIMEOUT = timedelta(seconds=10)
PROGRESS_GIVE_UP = timedelta(seconds=30)


def retry_policy(retry: RetrySpec) -> RetryPolicy:
    """A step's declared retry, with the agency's final answers never retried."""
    return RetryPolicy(
        initial_interval=retry.initial_interval,
        backoff_coefficient=retry.backoff,
        maximum_interval=retry.max_interval,
        maximum_attempts=retry.max_attempts,
        non_retryable_error_types=list(NON_RETRYABLE_ERRORS),
    )


def call_agency(step: CallStep, call: AgencyCallInput, agency_name: str) -> workflow.ActivityConfig:
    item = f" · item {call.item_key}" if call.item_key is not None else ""
    return workflow.ActivityConfig(
        start_to_close_timeout=step.timeout + CALL_GRACE,
        retry_policy=retry_policy(step.retry),
        summary=f"{step.id}: {agency_name} · {call.operation} ({call.action}){item}",
    )


def notify_operator(step_id: str, role: str | None) -> workflow.ActivityConfig:
    return workflow.ActivityConfig(
        start_to_close_timeout=NOTICE_TIMEOUT,
        retry_policy=NOTICE_RETRY,
        summary=f"escalate {step_id} to {role or 'operators'}",
    )


def send_citizen_email(kind: str) -> workflow.ActivityConfig:
    return workflow.ActivityConfig(
        start_to_close_timeout=MAIL_TIMEOUT,
        schedule_to_close_timeout=MAIL_GIVE_UP,
        retry_policy=MAIL_RETRY,
        summary=f"email the citizen ({kind.replace('_', ' ')})",
    )


def record_request(*, finished: bool) -> workflow.LocalActivityConfig:
    return workflow.LocalActivityConfig(
        start_to_close_timeout=RECORD_TIMEOUT,
        schedule_to_close_timeout=RECORD_GIVE_UP,
        summary=f"record request ({'finished' if finished else 'started'})",
    )


def record_progress(step_id: str, event: str) -> workflow.LocalActivityConfig:
    return workflow.LocalActivityConfig(
        start_to_close_timeout=PROGRESS_TIMEOUT,
        schedule_to_close_timeout=PROGRESS_GIVE_UP,
        summary=f"record {step_id} ({event.replace('_', ' ')})",
    )
