"""Notifications (`qt notify`): trade and safety events sent through apprise to QT_NOTIFY_URLS."""
