"""`chatlake bench chaos --quick` runs end to end (a file of its own: the longest bench test,
run beside the others by `make test`'s two workers)."""

from __future__ import annotations

import json
import os
import subprocess

from tests.e2e.test_cli import CHATLAKE


def test_bench_chaos_quick_loses_nothing_leaks_nothing_and_refuses_every_forgery(home, tmp_path):
    """The short chaos run: the API, the ingest worker, Redis and PostgreSQL killed -9 in
    turn under steady traffic, an erasure and a retention pass; then the lake's counts and
    both probe suites. The correctness counts only; times are reported, never judged."""
    out = tmp_path / "chaos.json"
    result = subprocess.run(
        [CHATLAKE, "bench", "chaos", "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=900, env={**os.environ, "CHATLAKE_HOME": home},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads(out.read_text())
    assert json.loads(result.stdout)["correctness"] == written["correctness"]
    faults = {entry["fault"]: entry for entry in written["faults"]}
    assert set(faults) == {"steady", "api", "ingest", "redis", "postgres", "erasure", "retention"}
    for killed in ("api", "ingest", "redis", "postgres"):
        entry = faults[killed]
        assert entry["pid_killed"] != entry["new_pid"] and entry["recovered"], entry
        assert {"recovery_s", "restarted_by", "up_restarted", "requests"} <= set(entry)
        assert {"bad_5xx", "unavailable_503_retry_after", "connection_errors"} <= set(
            entry["requests"]
        )
    assert faults["erasure"]["status"] == "completed", faults["erasure"]  # under traffic
    assert faults["retention"]["exit_code"] == 0
    assert written["drain"]["drained"] is True
    lake = written["lake"]
    assert lake["acknowledged_messages"] > 0 and lake["bronze_rows_checked"] > 0
    assert lake["lost"] == 0, lake["lost_sample"]
    assert lake["duplicated"] == 0, lake["duplicated_sample"]
    probes = written["cross_tenant"]
    assert probes["probed"] == probes["operations"] > 40  # every tenant-scoped operation
    assert probes["leaks"] == 0, probes["leak_details"]
    forged = written["forged_webhooks"]
    assert set(forged["channels"]) == {
        "whatsapp", "messenger", "slack", "teams", "twilio", "twilio-voice"
    }  # fmt: skip
    assert all(c["genuine"]["accepted"] for c in forged["channels"].values())
    assert forged["attempts"] >= 6 * 4 and forged["refused_ratio"] == 1.0, forged["not_refused"]
