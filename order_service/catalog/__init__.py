"""The catalog: categories, items and their options (``model``), the admin's changes and the
catalog as everyone reads it, published retained on ``catalog`` through the outbox
(``service``), and the server's prices of an order's lines (``pricing``). May import ``store``.
"""
