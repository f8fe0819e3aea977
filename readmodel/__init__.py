"""The PostgreSQL read model: schema migrations, writers and queries.

Written by the activities, read by the front door, ``nwd status`` and ``nwd report``. No other
room runs SQL against its tables. It holds no personal data: ids, statuses, agency references
and reasons only.
"""
