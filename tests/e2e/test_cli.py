"""`nwd submit`, `status`, `answer`, `cancel` as a user runs them, through the intake: one
clear line per mistake."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest

from nwd.cli import main
from tests.e2e.conftest import EXAMPLES, Engine


@pytest.fixture
def cli_env(
    engine: Engine, temporal_address: str, encryption_key: bytes,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> Engine:
    monkeypatch.setenv("TEMPORAL_ADDRESS", temporal_address)
    monkeypatch.setenv("NWD_TASK_QUEUE", engine.task_queue)
    monkeypatch.setenv("NWD_ENCRYPTION_KEY", base64.b64encode(encryption_key).decode())
    monkeypatch.setenv("DATABASE_URL", "postgresql://unused@127.0.0.1:1/unused")
    monkeypatch.setenv("NWD_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("NWD_INTAKE_URL", engine.intake_url)
    return engine


async def nwd(*args: str) -> int:
    return await asyncio.to_thread(main, list(args))


class TestCommandLine:
    async def test_submit_wait_and_status(
        self, cli_env: Engine, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """submit prints the reference and its access code (once); --wait shows each step;
        status shows it again with the code, and refuses without it."""
        code = await nwd("submit", "register-a-business",
                         str(EXAMPLES / "register-a-business.json"), "--wait",
                         "--idempotency-key", "cli-test-1")
        out, err = capfd.readouterr()
        assert code == 0, err
        # (the intake runs in this process: its log lines are in the output too)
        printed = [line for line in out.splitlines() if "[info" not in line]
        reference = printed[0]
        cli_env.started.append(reference)
        assert reference.startswith("REGISTER-A-BUSINESS-")
        assert printed[1].startswith("access code: ")
        access_code = printed[1].removeprefix("access code: ")
        assert "shown once" in err
        assert "register_company" in out and "completed" in out
        assert await nwd("status", reference, "--access-code", access_code) == 0
        status_out, _ = capfd.readouterr()
        assert reference in status_out and "register_for_tax" in status_out
        assert await nwd("status", reference) == 2
        _, refused = capfd.readouterr()
        assert "no request" in refused and "--access-code" in refused
        assert await nwd("submit", "register-a-business",
                         str(EXAMPLES / "register-a-business.json"),
                         "--idempotency-key", "cli-test-1") == 0
        again, err = capfd.readouterr()
        assert [line for line in again.splitlines() if "[info" not in line] == [reference]
        assert "submitted before" in err

    async def test_user_mistakes_are_one_line_errors(
        self, cli_env: Engine, tmp_path: Path, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """Unknown service, unreadable file, invalid data, unknown reference: exit 2, no trace."""
        broken = tmp_path / "broken.json"
        broken.write_text("{not json")
        invalid = tmp_path / "invalid.json"
        data = json.loads((EXAMPLES / "change-of-address.json").read_text())
        del data["tax_id"]
        invalid.write_text(json.dumps(data))
        cases = [
            (("submit", "change-of-adress", str(invalid)), "change-of-address"),
            (("submit", "change-of-address", str(tmp_path / "missing.json")), "cannot read"),
            (("submit", "change-of-address", str(broken)), "not valid JSON"),
            (("submit", "change-of-address", str(invalid)), "tax_id"),
            (("status", "NO-SUCH-REQUEST"), "no request"),
            (("cancel", "NO-SUCH-REQUEST"), "no request"),
        ]
        for args, expected in cases:
            assert await nwd(*args) == 2, args
            _, err = capfd.readouterr()
            assert err.startswith("nwd: error: "), err
            assert expected in err, (args, err)
            assert "Traceback" not in err

    async def test_submit_wait_exits_1_when_the_request_fails(
        self, cli_env: Engine, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """--wait on a request that ends failed shows its steps, says so, and exits 1."""
        await cli_env.agencies.set_behaviour(
            "business-registry", {"reject": {"code": "name_taken", "reason": "name is taken"}})
        capfd.readouterr()  # the agencies' own log lines
        code = await nwd("submit", "register-a-business",
                         str(EXAMPLES / "register-a-business.json"), "--wait",
                         "--idempotency-key", "cli-test-fails")
        out, err = capfd.readouterr()
        reference = next(line for line in out.splitlines()
                         if line.startswith("REGISTER-A-BUSINESS-"))
        cli_env.started.append(reference)
        assert code == 1
        assert "status: failed" in out and "name is taken" in out
        assert f"request {reference} ended failed" in err
