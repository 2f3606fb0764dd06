"""The configuration file: the starter a first run writes, and clear errors for bad files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway import config
from tests.conftest import ROOT


def test_starter_config_has_a_demo_site_with_fresh_keys(tmp_path: Path) -> None:
    first, second = tmp_path / "a.toml", tmp_path / "b.toml"
    config.write_starter(first)
    config.write_starter(second)
    a, b = config.load(first), config.load(second)
    assert [s.id for s in a.sites] == ["demo"]
    assert a.sites[0].write_key.startswith("wk_") and a.sites[0].secret_key.startswith("sk_")
    assert a.sites[0].write_key != b.sites[0].write_key  # random per install
    assert [(u.name, u.readonly) for u in a.users] == [("analyst", True)]
    assert a.server.fsync == "always"


SITE = '[[sites]]\nid = "s"\nwrite_key = "k"\n'
USER = SITE + '[[users]]\nname = "u"\npassword = "p"\n'
SERVER = SITE + '[clickhouse]\nmode = "server"\n'


@pytest.mark.parametrize(("text", "error"), [
    ('[server]\nport = "x"\n[[sites]]\nid = "s"\nwrite_key = "k"\n', "Expected `int`, got `str` - at `$.server.port`"),
    ('[server]\nfsync = "sometimes"\n[[sites]]\nid = "s"\nwrite_key = "k"\n', "fsync"),
    ("[server]\n", "no [[sites]]"),
    ('[[sites]]\nid = "s"\nwrite_key = "k"\n[[sites]]\nid = "s"\nwrite_key = "j"\n', "site id 's' appears twice"),
    ('[[sites]]\nid = "s"\nwrite_key = "k"\n[[sites]]\nid = "t"\nwrite_key = "k"\n', "reuses a key"),
    ('[servre]\nport = 1\n[[sites]]\nid = "s"\nwrite_key = "k"\n', "unknown field `servre`"),
    (USER + 'sites = ["t"]\n', "user 'u' names sites that are not configured: ['t']"),
    (USER + 'sites = []\n', "user 'u' has sites = []"),
    (USER + 'readonly = false\nsites = ["s"]\n', "names sites but is not readonly"),
    (USER + '[[users]]\nname = "u"\npassword = "q"\n', "user 'u' appears twice"),
    (USER + 'max_memory_usage = -1\n', "Expected `int` >= 0"),
    (SITE + '[clickhouse]\nmode = "cluster"\n', "Invalid enum value 'cluster' - at `$.clickhouse.mode`"),
    (SERVER, 'clickhouse mode = "server" needs urls'),
    (SERVER + 'urls = ["clickhouse.internal:8123"]\n', "'clickhouse.internal:8123' is not the http"),
    (SERVER + 'urls = ["http://u:p@h:8123"]\n', "user and password go in clickhouse.user and .password"),
    (SERVER + 'urls = ["http://h:8123/db"]\n', "'http://h:8123/db' is not the http"),
    (SERVER + 'urls = ["http://h:99999"]\n', "clickhouse.urls: 'http://h:99999': Port out of range"),
    (SERVER + 'urls = ["http://h:8123"]\ndatabase = "analytics"\n', "clickhouse.database must be 'clicktrail'"),
    (SERVER + 'urls = ["http://h:8123"]\ncompression = "gzip"\n', "Invalid enum value 'gzip'"),
    (SERVER + 'urls = ["https://h"]\nca_cert = "nowhere.pem"\n', "clickhouse.ca_cert: no file 'nowhere.pem'"),
    (SERVER + 'urls = ["https://h"]\nca_cert = "bad.toml"\nverify = false\n', "ca_cert is given but verify = false"),
    (SITE + '[clickhouse]\nurls = ["http://h:8123"]\n', 'clickhouse.urls is for mode = "server"'),
    (SITE + '[clickhouse]\ncluster = "main"\n', 'clickhouse.cluster is for mode = "server"'),
])
def test_bad_configs_are_refused_with_the_reason(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError, match=error.replace("[", r"\[").replace("$", r"\$")):
        config.load(path)
    run = subprocess.run([sys.executable, "-m", "gateway", "serve", "--config", str(path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert error in run.stderr


def test_a_server_config_with_its_ca_certificate_beside_it(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    path = tmp_path / "clicktrail.toml"
    path.write_text(SERVER + 'urls = ["https://ch1:8443", "https://ch2:8443"]\nuser = "gw"\npassword = "pw"\n'
                    'ca_cert = "ca.pem"\ncluster = "main"\ncompression = "zstd"\n')
    clickhouse = config.load(path).clickhouse
    assert clickhouse.urls == ["https://ch1:8443", "https://ch2:8443"]
    assert clickhouse.ca_cert == str(tmp_path / "ca.pem")  # wherever the gateway is started from
    assert (clickhouse.cluster, clickhouse.compression, clickhouse.verify) == ("main", "zstd", True)
    plain = tmp_path / "plain.toml"
    plain.write_text(SITE)
    assert config.load(plain).clickhouse == config.ClickHouseConfig()  # embedded, as before the section existed
