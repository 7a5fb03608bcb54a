"""Who may do what: users, password hashing, bearer tokens and the login throttle
(``users``); broker logins issued by the service and the broker's password/ACL files
(``broker_logins``), kept in step by a relay unit (``sync``).

May import: ``store``, ``contract``, the shared modules. No HTTP here (``api.security``
reads the bearer token of a request).
"""
