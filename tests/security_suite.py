"""The security suite (``make security``, ``pytest -m security``): which tests are attacks.

Every test in a ``tests/test_security_*.py`` file is one. So are the tests below, which
live in files about something else: they get the ``security`` marker here, by file and
function name, so that their files stay as they are. A whole file is named with ``"*"``.
tests/test_security_suite.py checks that every name below still names a test.
docs/security.md lists the attacks and the test that holds each.
"""

from __future__ import annotations

import pytest

ALL = "*"

SECURITY_TESTS: dict[str, str | tuple[str, ...]] = {
    # MQTT: who may connect, what each login may read and write, on both brokers.
    "test_broker_security.py": (
        "test_bad_logins_are_refused",
        "test_a_rotated_secret_replaces_the_old_one",
        "test_a_deactivated_agent_cannot_log_in",
        "test_dashboard_login_is_read_only_and_ends_with_logout",
        "test_an_agent_reads_and_writes_only_its_own_topics",
        "test_retained_messages_never_leak_across_agents",
        "test_a_burst_of_500_agent_logins_does_not_stall_delivery",
    ),
    # The NATS cluster's auth callout: the client id is the username there too.
    "test_cluster_client_ids.py": (
        "test_another_login_cannot_take_a_devices_client_id",
        "test_a_wrong_secret_is_refused_the_right_one_accepted",
        "test_a_deactivated_or_rotated_login_is_cut_off_at_the_reload",
    ),
    # The embedded broker's login and ACL plugins.
    "test_broker_auth.py": (
        "test_only_a_known_user_with_its_secret_may_connect",
        "test_rotated_secret_disconnects_the_client_and_refuses_the_old_secret",
        "test_removed_user_is_disconnected",
        "test_password_file_missing_then_appearing",
        "test_agent_may_not_subscribe_or_publish_outside_its_topics",
        "test_broad_subscription_never_delivers_a_forbidden_topic",
        "test_retained_message_of_another_agent_never_reaches_an_agent",
        "test_will_on_a_forbidden_topic_is_dropped",
        "test_acl_reload_and_malformed_acl_keeps_the_last_good_one",
        "test_burst_of_500_logins_does_not_stall_live_traffic",
        "test_files_and_anonymous_mode_do_not_mix",
        "test_refused_connect_with_a_taken_client_id_leaves_the_owner_alone",
        "test_no_retained_message_before_subscribing",
        "test_removed_users_persistent_session_queues_nothing",
    ),
    # The relay's publish channel into the embedded broker: the secret, frames, connections.
    "test_broker_channel.py": (
        "test_a_connection_without_the_secret_publishes_nothing",
        "test_a_bad_frame_closes_the_channel",
        "test_a_stale_file_or_a_stranger_on_its_port_is_no_channel",
        "test_connections_are_bounded",
    ),
    # Malformed, oversized and truncated packets against the embedded broker.
    "test_broker_malformed.py": ALL,
    # The embedded broker's bounds: $ topics, queues, slow readers, refused logins.
    "test_broker_hardening.py": (
        "test_connect_replays_no_retained_message_for_other_clients_filters",
        "test_wildcards_at_the_first_level_do_not_match_dollar_topics",
        "test_a_client_publishing_to_a_dollar_topic_is_disconnected",
        "test_offline_queue_is_bounded_and_drops_the_oldest",
        "test_offline_queue_is_bounded_by_payload_bytes",
        "test_a_client_that_stops_acknowledging_is_bounded_and_stalls_no_one",
        "test_refused_login_leaves_the_existing_session_alone",
    ),
    # The login files: no username can inject a line.
    "test_credfiles.py": ("test_password_file_round_trip_rejects_bad_usernames",),
    # REST: tokens, roles, ownership; password guessing; broker logins issued over REST.
    "test_api_auth.py": ALL,
    "test_api_mqtt_credentials.py": ALL,
    "test_openapi.py": ("test_security_in_the_document_is_what_the_server_enforces",),
    # REST: bad bodies are refused whole (400/413/415/422, nothing written), never a 500.
    "test_api_validation.py": (
        "test_malformed_json_is_400",
        "test_wrong_content_type_is_415",
        "test_oversized_body_is_413",
        "test_unknown_field_is_422",
        "test_body_must_be_a_json_object",
        "test_too_many_items_is_422",
        "test_bad_strings_are_422",
        "test_control_characters_are_refused",
        "test_bad_if_match_is_400",
        "test_bad_idempotency_key_is_400",
    ),
    "test_fuzz_api.py": ALL,
    "test_fuzz_findings.py": ALL,
    # Conditional writes and replays.
    "test_api_lifecycle.py": ("test_stale_if_match_is_412",),
    "test_api_idempotency.py": (
        "test_keys_are_scoped_per_user",
        "test_same_key_with_a_different_body_is_422",
    ),
    "test_processes.py": (
        "test_four_workers_updating_one_order_lose_nothing",
        "test_make_run_keeps_the_api_and_relay_when_the_broker_stops",
    ),
    "test_dispatch_offers.py": ("test_only_the_offered_agents_may_answer",),
    # Customers never set prices; the catalog is written by admins (REST) and the service (MQTT).
    "test_pricing.py": (
        "test_a_customers_price_is_refused",
        "test_unknown_and_unavailable_items_are_refused_and_write_nothing",
    ),
    "test_catalog.py": ("test_only_admins_change_the_catalog", "test_bad_items_are_422_naming_the_field"),
    "test_catalog_topic.py": ALL,
    "test_signup_limit.py": ALL,
    # The dashboard's files, webhooks and the Socket.IO bridge.
    "test_dashboard_static.py": (
        "test_index_and_modules_carry_a_csp_without_inline",
        "test_only_the_pages_own_files_are_served",
    ),
    "test_webhooks.py": (
        "test_registration_is_admin_only_and_refuses_non_http_urls",
        "test_a_wrong_signature_is_detected_by_the_documented_recipe",
        "test_a_name_resolving_to_a_private_address_is_not_connected_to",
    ),
    "test_socketio_bridge.py": (
        "test_agents_hear_their_own_assignments_only",
        "test_a_forbidden_join_room_is_refused",
        "test_a_bad_token_is_refused_at_connect",
        "test_logging_out_disconnects_the_socket",
    ),
    # The API's HTTP server: request heads past its bounds, clients that trickle them.
    "test_api_server.py": (
        "test_oversized_request_heads_are_refused_and_the_server_goes_on",
        "test_a_client_trickling_its_headers_is_cut_off_at_the_keepalive_setting",
    ),
}


def is_security_test(file_name: str, function_name: str) -> bool:
    if file_name.startswith("test_security_"):
        return True
    names = SECURITY_TESTS.get(file_name, ())
    return names == ALL or function_name in names


# Before the built-in hook that applies ``-m``, so that ``-m security`` sees the marker.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        function_name = getattr(item, "originalname", item.name)
        if is_security_test(item.path.name, function_name):
            item.add_marker(pytest.mark.security)
