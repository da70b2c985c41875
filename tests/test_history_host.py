"""bcast history, recovery and presence on the host bus: two worker
processes, the hub in their supervisor (the checks are in
support/history.py). A client's connection goes to either worker, so the
checks' clients are spread over both."""

import pytest

from conftest import reactive, standalone
from support import history as checks

SERVICES = {"lhistory": reactive("/lhistory", protocol="LAppS", instances=2),
            "hticker": standalone(preload=["nap"])}
MAX_BYTES = 200_000


@pytest.fixture
def server(supervised):
    server = supervised(SERVICES, bus={"history_max_bytes": MAX_BYTES})
    server.wait_for(r"hticker::offset 100\b", timeout=30)
    return server


def urls(server):
    return [server.url("/lhistory")] * 4


def test_sends_are_numbered_and_plain_channels_unchanged(server):
    checks.sends_are_numbered_and_plain_channels_unchanged(urls(server))


def test_a_subscriber_recovers_what_it_missed_across_a_drop(server):
    checks.a_subscriber_recovers_what_it_missed_across_a_drop(urls(server), server)


def test_a_position_too_old_or_of_another_epoch_is_not_recovered(server):
    checks.a_position_too_old_or_of_another_epoch_is_not_recovered(urls(server))


def test_presence_counts_and_lists_subscriptions_of_both_workers(server):
    checks.presence_counts_and_lists_every_subscription(urls(server), processes=2)


def test_history_stays_bounded_under_a_flood(server):
    checks.history_stays_bounded_under_a_flood(urls(server), MAX_BYTES)


def test_presence_forgets_a_worker_that_dies(server):
    checks.presence_forgets_a_process_that_dies(urls(server))
    server.wait_for(r'"lapps_event": "worker.exit"', timeout=30)


def test_bad_options_get_their_answer(server):
    checks.bad_options_get_their_answer(urls(server))
    assert server.bad_lines() == []
