"""bcast history, recovery and presence on the local bus, over real
sockets (the checks are in support/history.py; test_bus.py runs them on
the host and Redis buses)."""

import signal

import pytest

from conftest import TEST_APPS, reactive, standalone
from support import history as checks

SERVICES = {"lhistory": reactive("/lhistory", protocol="LAppS", instances=2),
            "hticker": standalone(preload=["nap"])}
MAX_BYTES = 200_000


@pytest.fixture
def server(start_server):
    server = start_server(SERVICES, {"bus": {"history_max_bytes": MAX_BYTES}},
                          applications=TEST_APPS)
    server.wait_started(SERVICES)
    return server


def test_sends_are_numbered_and_plain_channels_unchanged(server):
    checks.sends_are_numbered_and_plain_channels_unchanged([server.url("/lhistory")])


def test_a_subscriber_recovers_what_it_missed_across_a_drop(server):
    checks.a_subscriber_recovers_what_it_missed_across_a_drop([server.url("/lhistory")], server)
    assert server.bad_lines() == []


def test_a_position_too_old_or_of_another_epoch_is_not_recovered(server):
    checks.a_position_too_old_or_of_another_epoch_is_not_recovered([server.url("/lhistory")])


def test_presence_counts_and_lists_every_subscription(server):
    checks.presence_counts_and_lists_every_subscription([server.url("/lhistory")])


def test_history_stays_bounded_under_a_flood(server):
    checks.history_stays_bounded_under_a_flood([server.url("/lhistory")], MAX_BYTES)


def test_bad_options_get_their_answer(server):
    checks.bad_options_get_their_answer([server.url("/lhistory")])
    assert server.bad_lines() == []


def test_a_restart_on_the_local_bus_changes_the_epoch(start_server):
    first = start_server(SERVICES, applications=TEST_APPS)
    first.wait_started(SERVICES)
    before = checks.epoch_of(first.url("/lhistory"))
    assert first.stop() == -signal.SIGTERM  # twistd exits by the signal it got
    second = start_server(SERVICES, applications=TEST_APPS)
    second.wait_started(SERVICES)
    assert checks.epoch_of(second.url("/lhistory")) != before
