"""Each ClickHouse HTTP user's limits, and the settings profiles through which ClickHouse holds them.

A limit is a ClickHouse setting (max_memory_usage, ...) set on each of the user's queries. ClickHouse's own
settings constraints keep it there: a query may lower it, never raise or lift it (0 is "no limit" to
ClickHouse, so a limit's constraint also has a minimum). Constraints live in settings profiles, which the
embedded engine reads from a users file at start (it keeps no profiles of its own, and SQL cannot create
them there), so the Store writes that file before it opens the engine and each user's connection enters
its profile. Profile names are random, drawn at each start: switching to a profile is a setting that
ClickHouse lets anyone change, so a user must not be able to name another user's, laxer, one (the engine's
user may not list them: it has no access management).

The same configuration holds the engine's server settings (SERVER_SETTINGS): the memory it may keep for
itself, which ClickHouse sizes for a server of its own and chDB leaves so.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from xml.etree import ElementTree

from gateway.config import MiB, UserConfig

#: The engine's server settings, as config.xml nests them. ClickHouse's defaults suit a server owning its machine:
#: caches of up to 5 GiB each, and a 1 MiB buffer for each file a new part writes. Measured on the 2-core machine:
SERVER_SETTINGS: dict[str, int | dict[str, int]] = {
    # Every MergeTree table (inserts and merges): write buffers that start at 16 KiB and grow as a file needs, not
    # 1 MiB for each file of a wide part (events writes 71 streams, each a data and a marks file). An insert of
    # 40,000 spooled rows (14 MB in memory) took 185 MB, now 47 MB; of 300,000 rows 470 MB, now 335 MB.
    # The gateway's peak RSS under full batch load fell by 30 to 110 MB, with the same rows/s and CPU per event.
    "merge_tree": {"min_columns_to_activate_adaptive_write_buffer": 1},
    # Marks of the columns read, the loader's dedup lookups included: 1.2 MB with 20 million events stored, so
    # 64 MiB holds the hot ones of some billion events, where the default would keep 5 GiB.
    "mark_cache_size": 64 * MiB,
    # Which granules a WHERE clause (the analysts' site and time filters) left out, and the expressions compiled
    # to machine code: entries of kilobytes, tens of them here, capped well below their 100 and 128 MiB defaults.
    "query_condition_cache_size": 16 * MiB,
    "compiled_expression_cache_size": 16 * MiB,
}

#: Share of the machine's memory one query may take unless its user's max_memory_usage says otherwise: with
#: one query at a time (chDB), the loader, the spool and the answer being sent keep the rest.
DEFAULT_MEMORY_SHARE = 0.25

# Settings that move state shared by every query (all run as the engine's one user): a read-only user could
# starve the loader of memory or bandwidth with them. Site filters are fixed for the same reason.
_FIXED_FOR_READONLY = ("additional_table_filters", "max_memory_usage_for_user", "max_network_bandwidth_for_user",
                       "max_network_bandwidth_for_all_users", "max_temporary_data_on_disk_size_for_user",
                       "max_concurrent_queries_for_user", "max_concurrent_queries_for_all_users")
# The query cache is keyed by the query, not by the site filters around it: a scoped user could read the
# result another user's query left there.
_FIXED_FOR_SCOPED = ("use_query_cache",)


def machine_memory() -> int:
    """Bytes of memory this machine gives the process: physical memory, or its cgroup's limit if lower."""
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit():  # "max" in cgroup v2: none
            return min(physical, int(text))
    return physical


@dataclass(frozen=True)
class Limits:
    """A user's limits, by the names of ClickHouse's settings; 0: none."""

    max_memory_usage: int
    max_execution_time: float
    max_result_rows: int
    max_result_bytes: int
    max_rows_to_read: int

    @classmethod
    def of(cls, user: UserConfig, query_timeout_s: float) -> Limits:
        memory = user.max_memory_usage
        return cls(
            max_memory_usage=int(machine_memory() * DEFAULT_MEMORY_SHARE) if memory is None else memory,
            max_execution_time=query_timeout_s if user.max_execution_time is None else user.max_execution_time,
            max_result_rows=user.max_result_rows,
            max_result_bytes=user.max_result_bytes,
            max_rows_to_read=user.max_rows_to_read,
        )

    def settings(self) -> dict[str, int | float]:
        """The limits that hold, as settings."""
        return {name: value for name, value in asdict(self).items() if value}


class Profiles:
    """One settings profile per user, named for this start only."""

    def __init__(self, users: Sequence[UserConfig], query_timeout_s: float) -> None:
        self.users = {user.name: user for user in users}
        # Each its own token: a user sees its profile's name (currentProfiles()), which must not lead to another's.
        self.names = {user.name: f"clicktrail_{secrets.token_hex(8)}" for user in users}
        self.limits = {user.name: Limits.of(user, query_timeout_s) for user in users}

    def write(self, directory: Path) -> Path:
        """Write the engine's configuration (its one user, these profiles, SERVER_SETTINGS) into ``directory``;
        returns the file to start the engine with."""
        directory.mkdir(parents=True, exist_ok=True)
        users = directory / "users.xml"
        users.write_bytes(ElementTree.tostring(self._users_xml()))
        config = ElementTree.Element("clickhouse")
        ElementTree.SubElement(config, "users_config").text = str(users)
        _elements(config, SERVER_SETTINGS)
        path = directory / "config.xml"
        path.write_bytes(ElementTree.tostring(config))
        return path

    def _users_xml(self) -> ElementTree.Element:
        root = ElementTree.Element("clickhouse")
        # The engine's own user, as chDB makes it without a file: everything the gateway runs (the loader's
        # inserts, admins' DDL) runs as it, each user's connection within its profile.
        default = ElementTree.SubElement(ElementTree.SubElement(root, "users"), "default")
        ElementTree.SubElement(default, "password")
        ElementTree.SubElement(ElementTree.SubElement(default, "networks"), "ip").text = "::/0"
        ElementTree.SubElement(default, "profile").text = "default"
        ElementTree.SubElement(default, "quota").text = "default"
        profiles = ElementTree.SubElement(root, "profiles")
        ElementTree.SubElement(profiles, "default")
        for name, profile in self.names.items():
            constraints = ElementTree.SubElement(ElementTree.SubElement(profiles, profile), "constraints")
            for setting, value in self.limits[name].settings().items():
                bounds = ElementTree.SubElement(constraints, setting)
                # The least that is still a limit: ClickHouse reads 0 as none.
                ElementTree.SubElement(bounds, "min").text = "0.001" if isinstance(value, float) else "1"
                ElementTree.SubElement(bounds, "max").text = str(value)
            user = self.users[name]
            if user.readonly:
                for setting in _FIXED_FOR_READONLY + (_FIXED_FOR_SCOPED if user.sites is not None else ()):
                    ElementTree.SubElement(ElementTree.SubElement(constraints, setting), "const")
        ElementTree.SubElement(ElementTree.SubElement(root, "quotas"), "default")
        return root


def _elements(parent: ElementTree.Element, settings: dict[str, int | dict[str, int]]) -> None:
    for name, value in settings.items():
        element = ElementTree.SubElement(parent, name)
        if isinstance(value, dict):
            _elements(element, value)
        else:
            element.text = str(value)
