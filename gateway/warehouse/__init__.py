"""The warehouse: ClickHouse (embedded by default), its migrations and views, and the loader that fills it."""
