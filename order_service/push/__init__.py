"""Web Push to the agents' phones (issue 19 item 6): the VAPID keys (``keys``), the
devices' subscriptions (``model``, ``subscriptions``) and the relay unit that sends a push
for a new assignment or offer to an agent whose device is not connected (``sender``).

May import the store only; the API stores subscriptions through ``subscriptions``, the
relay process runs ``sender.PushSender`` beside the outbox publisher.
"""
