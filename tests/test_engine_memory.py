"""The engine runs with the server settings the Store writes for it (gateway/warehouse/user_limits.py
SERVER_SETTINGS): read
back from the engine itself, as a gateway opens it, since chDB would silently keep its defaults for a key it does
not know or a file it did not read."""

from __future__ import annotations

from gateway.warehouse.store import Store
from gateway.warehouse.user_limits import SERVER_SETTINGS


def engine_settings(store: Store, table: str, names: list[str]) -> dict[str, tuple[str, str]]:
    """name -> (value, changed) as the engine reports them in ``table``."""
    rows = store.query(f"SELECT name, value, changed FROM system.{table} WHERE has({{names:Array(String)}}, name)",
                       readonly=False, params={"names": str(names)}).decode()
    return {name: (value, changed) for name, value, changed in (line.split("\t") for line in rows.splitlines())}


def test_the_engine_runs_with_the_server_settings_written_for_it(store: Store) -> None:
    server = {name: value for name, value in SERVER_SETTINGS.items() if not isinstance(value, dict)}
    assert engine_settings(store, "server_settings", list(server)) == {
        name: (str(value), "1") for name, value in server.items()}


def test_every_merge_tree_table_gets_the_merge_tree_settings(store: Store) -> None:
    merge_tree = SERVER_SETTINGS["merge_tree"]
    assert isinstance(merge_tree, dict)
    assert engine_settings(store, "merge_tree_settings", list(merge_tree)) == {
        name: (str(value), "1") for name, value in merge_tree.items()}
