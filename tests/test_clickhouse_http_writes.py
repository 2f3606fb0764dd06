"""Writes through the gateway's ClickHouse port as analysts' tools send them, against a real gateway process:
clickhouse-connect's insert methods (Native, pandas, Arrow, raw binary formats), pandas' to_sql through
clickhouse-connect's SQLAlchemy dialect, multipart/form-data requests with parameters and external tables,
and the headers every answer carries."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator

import clickhouse_connect
import httpx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError
from clickhouse_connect.driver.external import ExternalData

from tests.conftest import GatewayProcess

ADMIN = ("admin", "admin-pw")
ANALYST = ("analyst", "analyst-pw")
COLUMNS = "id UInt32, name String, at DateTime, tags Array(String), score Nullable(Float64)"


def connect(gateway: GatewayProcess, user: tuple[str, str] = ADMIN, **kwargs: object) -> Client:
    return clickhouse_connect.get_client(host="127.0.0.1", port=gateway.clickhouse_port, username=user[0],
                                         password=user[1], **kwargs)


@pytest.fixture(scope="module")
def admin(gateway: GatewayProcess) -> Iterator[Client]:
    client = connect(gateway)
    yield client
    client.close()


@pytest.fixture
def table(admin: Client) -> str:
    name = f"default.w_{uuid.uuid4().hex[:10]}"
    admin.command(f"CREATE TABLE {name} ({COLUMNS}) ENGINE = MergeTree ORDER BY id")
    return name


@pytest.fixture(scope="module")
def http(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{gateway.clickhouse_port}", timeout=30) as client:
        yield client


ROWS = [
    [1, "wechat_group_7", pd.Timestamp("2026-01-02 03:04:05").to_pydatetime(), ["a", "b"], 1.5],
    [2, "渠道码; DROP TABLE x\0", pd.Timestamp("2026-01-02 03:04:06").to_pydatetime(), [], None],
]


def stored(admin: Client, table: str) -> list[tuple[object, ...]]:
    return admin.query(f"SELECT id, name, toString(at), tags, score FROM {table} ORDER BY id").result_rows


EXPECTED = [(1, "wechat_group_7", "2026-01-02 03:04:05", ["a", "b"], 1.5),
            (2, "渠道码; DROP TABLE x\0", "2026-01-02 03:04:06", [], None)]


# -- clickhouse-connect's insert methods -----------------------------------------------------------------


def test_insert_sends_native_blocks_and_reports_what_it_wrote(admin: Client, table: str) -> None:
    summary = admin.insert(table, ROWS, column_names=["id", "name", "at", "tags", "score"])
    assert summary.written_rows == 2
    assert stored(admin, table) == EXPECTED


def test_insert_df_and_insert_arrow(admin: Client, table: str) -> None:
    frame = pd.DataFrame({"id": [1, 2], "name": [r[1] for r in ROWS], "at": [r[2] for r in ROWS],
                          "tags": [r[3] for r in ROWS], "score": [1.5, None]})
    assert admin.insert_df(table, frame).written_rows == 2
    arrow = pa.table({"id": pa.array([3], pa.uint32()), "name": ["arrow"], "at": pa.array([0], pa.timestamp("s")),
                      "tags": [["x"]], "score": pa.array([None], pa.float64())})
    admin.insert_arrow(table, arrow)
    assert stored(admin, table) == [*EXPECTED, (3, "arrow", "1970-01-01 00:00:00", ["x"], None)]


@pytest.mark.parametrize("fmt", ["RowBinary", "RowBinaryWithNames", "RowBinaryWithNamesAndTypes", "Native",
                                 "Parquet", "Arrow", "ArrowStream", "CSV"])
def test_raw_insert_of_each_binary_format(admin: Client, table: str, fmt: str) -> None:
    # The bytes come from ClickHouse itself (through the gateway), in the format under test.
    source = ("SELECT * FROM (SELECT 1::UInt32 AS id, 'a\\0;b' AS name, toDateTime('2026-01-02 03:04:05') AS at,"
              " ['t'] AS tags, NULL::Nullable(Float64) AS score)")
    data = admin.raw_query(source, fmt=fmt)
    admin.raw_insert(table, None, data, fmt=fmt)
    assert stored(admin, table) == [(1, "a\0;b", "2026-01-02 03:04:05", ["t"], None)]


def test_parquet_from_pyarrow_in_the_body_after_the_statement(http: httpx.Client, admin: Client, table: str) -> None:
    buffer = io.BytesIO()
    pq.write_table(pa.table({"id": pa.array([7], pa.uint32()), "name": ["pq"], "at": pa.array([0], pa.timestamp("s")),
                             "tags": [["p"]], "score": [0.5]}), buffer)
    response = http.post("/", content=f"INSERT INTO {table} FORMAT Parquet\n".encode() + buffer.getvalue(), auth=ADMIN)
    assert response.status_code == 200, response.text
    assert json.loads(response.headers["X-ClickHouse-Summary"])["written_rows"] == "1"
    assert stored(admin, table) == [(7, "pq", "1970-01-01 00:00:00", ["p"], 0.5)]


def test_pandas_to_sql_and_read_sql_through_the_sqlalchemy_dialect(gateway: GatewayProcess, table: str) -> None:
    engine = sa.create_engine(f"clickhousedb://admin:admin-pw@127.0.0.1:{gateway.clickhouse_port}/default")
    name = table.split(".", 1)[1]
    frame = pd.DataFrame({"id": [1, 2], "name": ["a", "b';c"], "at": pd.to_datetime(["2026-01-02", "2026-01-03"]),
                          "tags": [["x"], []], "score": [0.25, None]})
    assert frame.to_sql(name, engine, if_exists="append", index=False) == 2
    with engine.begin() as conn:  # executemany
        conn.execute(sa.text(f"INSERT INTO {name} (id, name, at, tags, score) VALUES (:i, :n, :a, [], NULL)"),
                     [{"i": 3, "n": "x", "a": "2026-01-04 00:00:00"}, {"i": 4, "n": "y", "a": "2026-01-05 00:00:00"}])
    back = pd.read_sql(sa.text(f"SELECT id, name FROM {name} ORDER BY id"), engine)
    assert back.to_dict("records") == [{"id": 1, "name": "a"}, {"id": 2, "name": "b';c"}, {"id": 3, "name": "x"},
                                       {"id": 4, "name": "y"}]
    engine.dispose()


# -- admin users only ----------------------------------------------------------------------------------


def test_read_only_users_get_clickhouse_s_refusal_for_every_insert(gateway: GatewayProcess, admin: Client,
                                                                    table: str, http: httpx.Client) -> None:
    analyst = connect(gateway, ANALYST)
    with pytest.raises(DatabaseError) as refused:
        analyst.insert(table, ROWS, column_names=["id", "name", "at", "tags", "score"])
    assert "READONLY" in str(refused.value) and refused.value.code == 164
    analyst.close()
    native = admin.raw_query("SELECT 1::UInt32 AS id", fmt="Native")
    response = http.post("/", params={"query": f"INSERT INTO {table} (id) FORMAT Native"}, content=native,
                         auth=ANALYST)
    assert response.status_code == 500 and response.headers["X-ClickHouse-Exception-Code"] == "164"
    assert stored(admin, table) == []


def test_binary_bytes_after_anything_but_an_insert_are_a_syntax_error(http: httpx.Client) -> None:
    response = http.post("/", content=b"SELECT 1\n\xff\xfe", auth=ADMIN)
    assert response.status_code == 400 and response.headers["X-ClickHouse-Exception-Code"] == "62"
    assert "only an INSERT's data may be binary" in response.text


# -- multipart/form-data -------------------------------------------------------------------------------


def test_parameters_past_4_kb_go_as_a_multipart_form(admin: Client) -> None:
    long = "x" * 5000  # clickhouse-connect moves the query and its parameters into the body past 4 KB
    result = admin.query("SELECT length({p:String}), {q:String}", parameters={"p": long, "q": "it's"})
    assert result.result_rows == [(5000, "it's")]


def test_external_tables(admin: Client, gateway: GatewayProcess) -> None:
    data = ExternalData(file_name="ext.csv", data=b"1,one\n2,two\n3,three\n", fmt="CSV",
                        structure=["id UInt32", "name String"])
    data.add_file(file_name="codes", data=b"2\n3\n", types=["UInt32"])
    result = admin.query("SELECT name FROM ext WHERE id IN (SELECT _1 FROM codes) ORDER BY id", external_data=data)
    assert result.result_rows == [("two",), ("three",)]
    # They belonged to that query only.
    with pytest.raises(DatabaseError, match="UNKNOWN_TABLE"):
        admin.query("SELECT * FROM ext")
    analyst = connect(gateway, ANALYST)
    with pytest.raises(DatabaseError, match="READONLY"):
        analyst.query("SELECT count() FROM ext", external_data=data)
    analyst.close()


def test_external_tables_in_a_session_leave_its_own_temporary_tables_alone(gateway: GatewayProcess) -> None:
    client = connect(gateway, session_id=uuid.uuid4().hex)
    client.command("CREATE TEMPORARY TABLE mine (x UInt8)")
    client.command("INSERT INTO mine VALUES (1)")
    data = ExternalData(file_name="mine", data=b"5\n", types=["UInt8"])
    with pytest.raises(DatabaseError, match="already exists"):
        client.query("SELECT * FROM mine", external_data=data)
    data = ExternalData(file_name="theirs", data=b"5\n", types=["UInt8"])
    assert client.query("SELECT _1 FROM theirs", external_data=data).result_rows == [(5,)]
    assert client.query("SELECT x FROM mine").result_rows == [(1,)]
    with pytest.raises(DatabaseError, match="UNKNOWN_TABLE"):
        client.query("SELECT * FROM theirs")
    client.close()


def test_malformed_forms_are_the_client_s_error(http: httpx.Client) -> None:
    headers = {"Content-Type": "multipart/form-data; boundary=b"}
    response = http.post("/", content=b'--b\r\nContent-Disposition: form-data; name="query"\r\n\r\nSELECT 1',
                         headers=headers, auth=ADMIN)
    assert response.status_code == 400 and response.headers["X-ClickHouse-Exception-Code"] == "117"
    response = http.post("/", content=b'--b\r\nContent-Disposition: form-data; name="t"; filename=""\r\n\r\n1\r\n'
                                      b'--b--\r\n', params={"query": "SELECT * FROM t"}, headers=headers, auth=ADMIN)
    assert response.status_code == 400 and "Neither structure nor types" in response.text


# -- what every answer carries ---------------------------------------------------------------------------


def test_summary_progress_and_query_id_headers(http: httpx.Client, admin: Client, table: str) -> None:
    admin.insert(table, ROWS, column_names=["id", "name", "at", "tags", "score"])
    response = http.post("/", content=f"SELECT id FROM {table} ORDER BY id".encode(), auth=ANALYST,
                         params={"send_progress_in_http_headers": "1", "query_id": "q-17"})
    assert response.text == "1\n2\n"
    summary = json.loads(response.headers["X-ClickHouse-Summary"])
    assert set(summary) == {"read_rows", "read_bytes", "written_rows", "written_bytes", "total_rows_to_read",
                            "result_rows", "result_bytes", "elapsed_ns"}
    assert all(isinstance(value, str) and value.isdigit() for value in summary.values())
    assert summary["read_rows"] == "2" and summary["result_rows"] == "2" and summary["written_rows"] == "0"
    assert json.loads(response.headers["X-ClickHouse-Progress"]) == summary
    assert response.headers["X-ClickHouse-Query-Id"] == "q-17"

    plain = http.post("/", content=b"SELECT 1", auth=ANALYST)
    assert "X-ClickHouse-Progress" not in plain.headers
    error = http.post("/", content=b"SELECT * FROM nowhere", auth=ANALYST)
    assert error.status_code == 404 and json.loads(error.headers["X-ClickHouse-Summary"])["read_rows"] == "0"


def test_replicas_status(http: httpx.Client) -> None:
    response = http.get("/replicas_status")
    assert (response.status_code, response.text) == (200, "Ok.\n")
