"""What analysts read through: the ClickHouse HTTP interface (and the dashboard built on it)."""
