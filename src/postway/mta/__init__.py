"""The managed channel's engine: routes (transport map, MX), SMTP sessions, DKIM and VERP."""
