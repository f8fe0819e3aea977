"""The `nwd` command line and the embedded stack it runs (Temporal dev server, PostgreSQL)."""
