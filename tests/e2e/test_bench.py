"""`chatlake bench realtime` runs end to end and writes its JSON (no assertion on speed)."""

from __future__ import annotations

import json

import pytest

from tests.e2e.test_cli import run


@pytest.mark.parametrize("client", ["auto", "python"])
def test_bench_realtime_writes_ratios_of_both_ceilings(services, home, tmp_path, client):
    out = tmp_path / "realtime.json"
    result = run(
        "bench", "realtime", "--duration", "1", "--conversations", "200", "--connections", "4",
        "--workers", "1", "--rate", "50", "--out", str(out), "--client", client, home=home,
    )  # fmt: skip
    printed = json.loads(result.stdout)
    written = json.loads(out.read_text())
    assert printed["runs"] == written["runs"]
    measured = written["runs"]["1"]
    for target in ("echo", "stack", "full"):
        assert measured[target]["requests"] > 0
        assert measured[target]["errors"] == 0
    assert measured["full_vs_stack"] > 0 and measured["full_vs_echo"] > 0
    fixed = written["fixed_rate"]
    assert fixed["statuses"] == {"200": fixed["requests"]}
    assert set(fixed["latency_ms"]) >= {"p50", "p95", "p99"}


def test_bench_realtime_chain_reports_the_chains_own_overhead(services, home, tmp_path):
    out = tmp_path / "chain.json"
    result = run(
        "bench", "realtime", "--chain", "--duration", "1", "--rate", "20",
        "--provider-delay-ms", "20", "--out", str(out), home=home,
    )  # fmt: skip
    written = json.loads(out.read_text())
    assert json.loads(result.stdout)["chain_overhead_ms"] == written["chain_overhead_ms"]
    assert written["api_with_chain"]["statuses"] == {"200": written["messages"]}
    assert written["every_message_reached_the_provider"] is True
    assert written["provider_direct"]["latency_ms"]["p50"] >= 20  # the provider's own delay
    assert set(written["chain_overhead_ms"]) == {"p50", "p95", "p99"}


def test_bench_pipeline_times_a_full_and_an_incremental_run(home, tmp_path):
    out = tmp_path / "pipeline.json"
    run("bench", "pipeline", "--messages", "2000", "--tenants", "3", "--days", "2",
        "--out", str(out), home=home)  # fmt: skip
    written = json.loads(out.read_text())
    assert written["bronze_rows"] >= 2000
    assert (
        written["full"]["days"][0] < written["full"]["days"][1] < written["incremental_day"]["day"]
    )
    assert written["full"]["checks_passed"] == written["incremental_day"]["checks_passed"] > 30
    assert written["mart_rows"]["fct_tenant_daily"] == 3 * 3  # 3 tenants, 2 days + 1 new
    assert 0 < written["ceiling_vs_full_run"] and 0 < written["incremental_vs_full_run"]


def test_bench_erasure_erases_one_user_and_finds_no_trace(home, tmp_path):
    out = tmp_path / "erasure.json"
    run("bench", "erasure", "--messages", "3000", "--tenants", "3", "--days", "2",
        "--out", str(out), home=home)  # fmt: skip
    written = json.loads(out.read_text())
    assert written["rows_deleted"]["bronze/messages"] == written["subject_bronze_rows"] > 0
    assert written["rows_deleted"]["silver/turns"] == written["subject_bronze_rows"]
    assert written["traces_found_after"] == 0 and written["data_files_deleted"] > 0
    assert written["ceiling_vs_erase"] > 0


def test_bench_channels_measures_webhook_to_send_against_its_ceilings(services, home, tmp_path):
    out = tmp_path / "channels.json"
    result = run("bench", "channels", "--duration", "1", "--rate", "20", "--concurrency", "2",
                 "--out", str(out), home=home)  # fmt: skip
    written = json.loads(out.read_text())
    assert json.loads(result.stdout)["latency_p50_vs_ceiling"] == written["latency_p50_vs_ceiling"]
    measured = written["webhook_to_send"]
    assert measured["statuses"] == {"200": measured["messages"]}
    assert measured["replies_arrived"] == measured["messages"]  # every reply reached the API
    assert set(measured["latency_ms"]) == {"p50", "p95", "p99"}
    assert written["throughput"]["replies_delivered"] == written["throughput"]["statuses"]["200"]
    assert written["latency_p50_vs_ceiling"] > 0 and written["throughput_vs_ceiling"] > 0


def test_bench_startup_measures_the_api_process_against_a_minimal_one(services, home, tmp_path):
    out = tmp_path / "startup.json"
    result = run("bench", "startup", "--runs", "1", "--out", str(out), home=home)
    written = json.loads(out.read_text())
    assert json.loads(result.stdout)["full_vs_stack"] == written["full_vs_stack"]
    for target in ("stack", "full"):
        assert written[target]["ready_s_median"] > 0 and written[target]["rss_mib_median"] > 20
    assert written["full_vs_stack"]["rss_mib"] > 0 and written["full_vs_stack"]["ready_s"] > 0


@pytest.mark.parametrize("bus", ["redis", pytest.param("kafka", marks=pytest.mark.scale)])
def test_bench_ingest_moves_every_event_and_writes_ratios_of_its_ceilings(
    services, home, tmp_path, bus
):
    out = tmp_path / "ingest.json"
    run("bench", "ingest", "--bus", bus, "--events", "3000", "--batch-size", "1000",
        "--out", str(out), home=home)  # fmt: skip
    written = json.loads(out.read_text())
    assert written["ingest"]["rows"] == 3000
    assert written["ceilings"]["write_deltalake"]["rows"] == 3000
    assert written["ingest_vs_write_deltalake"] > 0
    if bus == "kafka":  # outbox -> relay -> Kafka (Tansu) -> the lake, nothing lost or doubled
        assert written["relay"]["records"] == 3000 and written["relay"]["outbox_left"] == 0
        assert written["ceilings"]["bare_fetch"]["records"] == 3000
        assert written["ingest"]["copies"] == 0
        assert written["relay_vs_bare_produce"] > 0 and written["ingest_vs_bare_fetch"] > 0
        assert "tansu" in written["config"]["broker"]
    else:
        assert written["ingest"]["stream_left"] == 0
        assert written["ingest_vs_bare_drain"] > 0
