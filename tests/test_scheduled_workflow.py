"""The workflows' scripts, run for real: the scheduled send against a local bare
repository standing in for GitHub (the ledger comes back; a lost push never causes a
second send), and the pull-request preview against a real git history."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailer.ledger import State

from .conftest import ROOT, SAMPLE, SAMPLE_RECIPIENTS, edit
from .helpers import cli_env
from .smtp_server import Behaviour, Server

pytestmark = pytest.mark.system  # git repositories and the workflow's scripts in subprocesses

DUE = "2017-03-28T09:15:00+02:00"


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.org", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """A bare repository holding a bulletin, its lists and the workflow's scripts."""
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    seed = tmp_path / "seed"
    git(tmp_path, "clone", "--quiet", str(bare), str(seed))
    shutil.copytree(SAMPLE, seed / "bulletins" / "2017-03")
    shutil.copytree(SAMPLE_RECIPIENTS, seed / "recipients")
    shutil.copytree(ROOT / ".github" / "scripts", seed / ".github" / "scripts")
    shutil.copy(ROOT / ".gitattributes", seed / ".gitattributes")
    shutil.copy(ROOT / ".gitignore", seed / ".gitignore")
    (seed / "ledger").mkdir()
    (seed / "ledger" / ".gitkeep").touch()
    git(seed, "add", ".")
    git(seed, "commit", "--quiet", "-m", "bulletin 2017-03")
    git(seed, "push", "--quiet", "origin", "main")
    return bare


def script_env(**extra: str) -> dict[str, str]:
    """The environment a workflow step gives its script: `mailer` on the PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["LEDGER_PUSH_BACKOFF"] = "0"  # a refused push is retried at once (1, 2, 3… s for real)
    env.update(extra)
    return env


def run_script(
    checkout: Path, script: str, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """One of .github/scripts/, run in ``checkout`` as the workflow runs it."""
    return subprocess.run(
        ["bash", f".github/scripts/{script}", *args],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def dispatch_script(checkout: Path, server: Server, run: str) -> subprocess.CompletedProcess[str]:
    env = script_env(**cli_env(server.port, Path("ledger")), RUN_ID=run)
    return run_script(checkout, "dispatch.sh", env, "--now", DUE)


def ci_run(
    remote: Path, tmp_path: Path, server: Server, run: str
) -> subprocess.CompletedProcess[str]:
    """A fresh checkout, then the workflow's script, as a scheduled run does it."""
    checkout = tmp_path / f"run-{run}"
    git(tmp_path, "clone", "--quiet", str(remote), str(checkout))
    return dispatch_script(checkout, server, run)


def remote_ledger(remote: Path, tmp_path: Path) -> str:
    view = tmp_path / "view"
    if view.exists():
        shutil.rmtree(view)
    git(tmp_path, "clone", "--quiet", str(remote), str(view))
    path = view / "ledger" / "2017-03.jsonl"
    return path.read_text(encoding="utf-8") if path.exists() else ""


def test_two_scheduled_runs_in_a_row_send_once(
    remote: Path, tmp_path: Path, server: Server
) -> None:
    first = ci_run(remote, tmp_path, server, "100-1")
    assert first.returncode == 0, first.stdout + first.stderr
    assert len(server.received) == 13
    ledger = remote_ledger(remote, tmp_path)
    assert ledger.count('"outcome": "sent"') == 13
    assert '"outcome": "claim"' in ledger and '"outcome": "release"' in ledger
    tracked = git(tmp_path / "remote.git", "ls-tree", "-r", "--name-only", "main", "ledger/")
    assert tracked.split() == ["ledger/.gitkeep", "ledger/2017-03.jsonl"]  # no lock file
    second = ci_run(remote, tmp_path, server, "101-1")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "complete" in second.stdout and len(server.received) == 13


def test_the_job_summary_shows_the_issues_the_run_touched(
    remote: Path, tmp_path: Path, server: Server
) -> None:
    first = ci_run(remote, tmp_path, server, "150-1")
    assert first.returncode == 0, first.stdout + first.stderr
    checkout = tmp_path / "run-150-1"
    step_summary = tmp_path / "step-summary.md"
    env = script_env(**cli_env(server.port, Path("ledger")), RUN_ID="150-1")
    env["GITHUB_STEP_SUMMARY"] = str(step_summary)
    done = run_script(checkout, "summary.sh", env)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = step_summary.read_text()
    assert "## Dispatch run 150-1" in summary
    assert "| 2017-03 | 13 | 0 | 0 |" in summary  # sent, failed, unfinished
    assert len(summary.encode()) < 64 * 1024  # far under GitHub's 1 MiB a step
    page = (checkout / "reports" / "health.html").read_text()
    assert "List health" in page
    assert re.search(r"[\w.+-]+@[\w-]+\.\w", page) is None  # counts and domains, no address
    other = run_script(checkout, "summary.sh", {**env, "RUN_ID": "999-1"})
    assert other.returncode == 0 and "(none)" in (checkout / "summary.md").read_text()


def test_outcomes_lost_after_sending_make_the_next_run_refuse(
    remote: Path, tmp_path: Path, server: Server
) -> None:
    hook = remote / "hooks" / "pre-receive"
    hook.write_text(  # accept the claim, then fail like a network error on the outcomes
        "#!/bin/sh\nwhile read old new ref; do\n"
        '  git log -1 --format=%s "$new" | grep -q outcomes && exit 1\ndone\nexit 0\n'
    )
    hook.chmod(0o755)
    first = ci_run(remote, tmp_path, server, "200-1")
    assert first.returncode == 1
    assert "restore ledger/ from this run's 'ledger' artifact" in first.stderr
    assert len(server.received) == 13
    hook.unlink()
    second = ci_run(remote, tmp_path, server, "201-1")
    assert second.returncode == 1
    assert "blocked" in second.stdout and "200-1" in second.stdout
    assert len(server.received) == 13  # nobody mailed twice


def test_branch_moved_meanwhile_is_rebased_and_pushed(
    remote: Path, tmp_path: Path, server: Server
) -> None:
    checkout = tmp_path / "run-300-1"
    git(tmp_path, "clone", "--quiet", str(remote), str(checkout))
    editor = tmp_path / "editor"
    git(tmp_path, "clone", "--quiet", str(remote), str(editor))
    (editor / "NOTES.md").write_text("An editor merged this while the run was starting.\n")
    git(editor, "add", "NOTES.md")
    git(editor, "commit", "--quiet", "-m", "editor change")
    git(editor, "push", "--quiet", "origin", "main")

    done = dispatch_script(checkout, server, "300-1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rebasing" in done.stderr
    log = git(tmp_path / "remote.git", "log", "--format=%s", "main")
    assert "editor change" in log and "ledger: outcomes of run 300-1" in log
    assert remote_ledger(remote, tmp_path).count('"outcome": "sent"') == 13


def test_a_broken_bulletin_does_not_hold_back_a_due_one(
    remote: Path, tmp_path: Path, server: Server
) -> None:
    editor = tmp_path / "editor"
    git(tmp_path, "clone", "--quiet", str(remote), str(editor))
    broken = editor / "bulletins" / "2017-06"
    shutil.copytree(editor / "bulletins" / "2017-03", broken)
    yaml = (broken / "bulletin.yaml").read_text(encoding="utf-8")
    (broken / "bulletin.yaml").write_text(yaml.replace("id: 2017-03", "id: [2017-06"))
    git(editor, "add", ".")
    git(editor, "commit", "--quiet", "-m", "a draft with a typo")
    git(editor, "push", "--quiet", "origin", "main")
    run = ci_run(remote, tmp_path, server, "400-1")
    assert run.returncode == 2  # the draft's error is reported ...
    assert "2017-06" in run.stdout and "invalid" in run.stdout
    assert len(server.received) == 13  # ... and the due issue went out all the same
    assert remote_ledger(remote, tmp_path).count('"outcome": "sent"') == 13


def _preview(checkout: Path, base: str) -> tuple[int, str]:
    summary = checkout / "summary.md"
    env = script_env(BASE_SHA=base, GITHUB_STEP_SUMMARY=str(summary))
    done = run_script(checkout, "preview.sh", env)
    return done.returncode, summary.read_text(encoding="utf-8")


def test_pull_request_preview_covers_what_changed(tmp_path: Path) -> None:
    repo = tmp_path / "pr"
    git(tmp_path, "init", "--quiet", "--initial-branch=main", str(repo))
    shutil.copytree(ROOT / ".github", repo / ".github")
    shutil.copytree(SAMPLE_RECIPIENTS, repo / "recipients")
    # A project's own templates/ overrides the bundled ones file by file.
    (repo / "templates" / "partials").mkdir(parents=True)
    shutil.copy(
        ROOT / "mailer" / "templates" / "partials" / "footer.html.j2",
        repo / "templates" / "partials" / "footer.html.j2",
    )
    shutil.copytree(SAMPLE, repo / "bulletins" / "2017-03")
    shutil.copytree(SAMPLE, repo / "bulletins" / "2017-06")
    yaml = repo / "bulletins" / "2017-06" / "bulletin.yaml"
    edit(yaml, "id: 2017-03", "id: 2017-06")
    git(repo, "add", ".")
    git(repo, "commit", "--quiet", "-m", "base")
    base = git(repo, "rev-parse", "HEAD").strip()

    item = repo / "bulletins" / "2017-06" / "items" / "04-bangkok-regional-seminar.md"
    item.write_text(item.read_text(encoding="utf-8") + "\nA late paragraph.\n")
    git(repo, "commit", "--quiet", "-am", "edit 2017-06")
    code, summary = _preview(repo, base)
    assert code == 0, summary
    assert "### bulletins/2017-06" in summary and "### bulletins/2017-03" not in summary
    assert "2017-06: OK" in summary and (repo / "previews" / "2017-06.mbox").exists()
    # The archive as it will look with the changed issue published.
    assert (repo / "previews" / "site" / "2017-06" / "en.html").exists()

    footer = repo / "templates" / "partials" / "footer.html.j2"
    edit(footer, "<p>", "<p class='f'>")
    edit(item, "title:", "titel:")
    git(repo, "commit", "--quiet", "-am", "template change, and a typo")
    code, summary = _preview(repo, base)
    assert code == 1  # the typo fails the check ...
    assert "### bulletins/2017-03" in summary and "2017-03: OK" in summary  # ... all previewed
    assert "field 'titel'" in summary


def _fake_gh(tmp_path: Path, visibility: str) -> dict[str, str]:
    """A `gh` on the PATH that answers the repository's visibility as GitHub would."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    gh = bin_dir / "gh"
    gh.write_text(f'#!/bin/sh\n[ "$2" = "repos/isu/bulletin" ] && echo {visibility}\n')
    gh.chmod(0o755)
    env = script_env(GITHUB_REPOSITORY="isu/bulletin")
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    return env


@pytest.mark.parametrize(
    ("visibility", "allowed"), [("private", True), ("internal", True), ("public", False)]
)
def test_the_workflows_run_only_in_a_private_repository(
    tmp_path: Path, visibility: str, allowed: bool
) -> None:
    done = subprocess.run(
        ["bash", str(ROOT / ".github" / "scripts" / "require-private.sh")],
        env=_fake_gh(tmp_path, visibility),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (done.returncode == 0) == allowed, done.stderr
    if not allowed:
        assert "personal data" in done.stderr and "private" in done.stderr


@pytest.mark.parametrize(
    ("now", "due"),
    [
        ("2017-03-28T06:59:00+00:00", False),  # send_at is 07:00 UTC
        ("2017-03-28T07:00:00+00:00", True),
        ("2017-03-30T12:00:00+00:00", True),  # within the 72 h window
        ("2017-04-05T07:00:00+00:00", False),  # stale: a person sends it
    ],
)
def test_the_fast_path_runs_only_when_a_bulletin_is_in_its_window(now: str, due: bool) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / ".github" / "scripts" / "anything-due.py"),
            str(SAMPLE.parent),
        ],
        env={"NOW": now, "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.stdout.strip() == f"due={'true' if due else 'false'}", done.stderr


def test_suppressions_of_a_scheduled_send_reach_the_repository_beside_a_persons(
    remote: Path, tmp_path: Path
) -> None:
    dead = "550 5.1.1 No such user"
    with Server(Behaviour(reject_rcpt={"research@example.com": dead})) as server:
        checkout = tmp_path / "run-500-1"
        git(tmp_path, "clone", "--quiet", str(remote), str(checkout))  # with .gitattributes
        editor = tmp_path / "editor"
        git(tmp_path, "clone", "--quiet", str(remote), str(editor))
        with (editor / "recipients" / "suppressions.csv").open("a") as handle:
            handle.write("asked.by.phone@example.org,unsubscribed by phone,2017-03-28\n")
        git(editor, "commit", "--quiet", "-am", "a person adds a suppression")
        git(editor, "push", "--quiet", "origin", "main")
        done = dispatch_script(checkout, server, "500-1")
    assert done.returncode == 1, done.stdout + done.stderr  # one reader failed
    view = tmp_path / "after"
    git(tmp_path, "clone", "--quiet", str(remote), str(view))
    rows = (view / "recipients" / "suppressions.csv").read_text()
    assert "asked.by.phone@example.org" in rows and "research@example.com" in rows
    assert "<<<<<<<" not in rows


def test_a_send_paused_at_the_quota_brings_the_scheduled_run_back(tmp_path: Path) -> None:
    ledgers = tmp_path / "ledger"
    ledgers.mkdir()
    root = tmp_path / "bulletins"
    shutil.copytree(SAMPLE, root / "2017-03")
    record = '{"recipient": "", "outcome": "%s", "attempt": 0}\n'
    (ledgers / "2017-03.jsonl").write_text(record % "sent" + record % "paused")

    def fast_path() -> str:
        done = subprocess.run(
            [
                sys.executable,
                str(ROOT / ".github" / "scripts" / "anything-due.py"),
                str(root),
                str(ledgers),
            ],
            env={"NOW": "2017-04-20T07:00:00+00:00", "PATH": os.environ["PATH"]},  # long stale
            capture_output=True,
            text=True,
            timeout=30,
        )
        return done.stdout.strip()

    assert fast_path() == "due=true"
    with (ledgers / "2017-03.jsonl").open("a") as handle:
        handle.write(record % "claim" + record % "sent")  # a later run sent the rest
    assert fast_path() == "due=false"


def test_a_stop_at_the_quota_is_not_an_error_for_the_workflow(
    remote: Path, tmp_path: Path, server: Server
) -> None:
    checkout = tmp_path / "run-600-1"
    git(tmp_path, "clone", "--quiet", str(remote), str(checkout))
    env = script_env(**cli_env(server.port, Path("ledger")), RUN_ID="600-1")
    env["MAILER_RATE_LIMITS"] = "5/day"
    done = run_script(checkout, "dispatch.sh", env, "--now", DUE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "quota" in done.stdout + done.stderr and len(server.received) == 5
    ledger = remote_ledger(remote, tmp_path)
    assert ledger.count('"outcome": "sent"') == 5 and '"outcome": "paused"' in ledger
    # Days later, past MAILER_DISPATCH_WINDOW: a send under way is continued, not stale.
    later = tmp_path / "run-601-1"
    git(tmp_path, "clone", "--quiet", str(remote), str(later))
    env["RUN_ID"] = "601-1"
    env.pop("MAILER_RATE_LIMITS")
    done = run_script(later, "dispatch.sh", env, "--now", "2017-04-05T09:00:00+02:00")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "stale" not in done.stdout and len(server.received) == 13


def test_a_person_pushing_to_the_ledger_mid_send_wedges_nothing(
    remote: Path, tmp_path: Path
) -> None:
    """Only suppressions.csv was union-merged: a person's line in the ledger made the
    outcomes' rebase fail, and the remote kept a claim without its release."""
    editor = tmp_path / "editor"

    def person_records_a_bounce() -> None:
        git(tmp_path, "clone", "--quiet", str(remote), str(editor))  # the claim is there
        line = (
            '{"time": "2017-03-28T07:30:00.000+00:00", "recipient": "old.contact@example.org", '
            '"outcome": "bounce", "attempt": 0, "code": null, "reply": "hard: 5.1.1 by hand", '
            '"message_id": "", "segments": [], "run": "<by-hand@isu>"}\n'
        )
        with (editor / "ledger" / "2017-03.jsonl").open("a") as handle:
            handle.write(line)
        git(editor, "commit", "--quiet", "-am", "a bounce recorded by hand")
        git(editor, "push", "--quiet", "origin", "main")

    with Server(Behaviour(on_first_data=person_records_a_bounce)) as server:
        run = ci_run(remote, tmp_path, server, "500-1")
        assert run.returncode == 0, run.stdout + run.stderr
        assert len(server.received) == 13
    ledger = remote_ledger(remote, tmp_path)
    assert "by hand" in ledger and ledger.count('"outcome": "sent"') == 13
    path = tmp_path / "remote-ledger.jsonl"
    path.write_text(ledger)
    assert State.load(path).claims == {}  # released: the next run is not blocked


def test_two_runs_claiming_at_once_send_once(remote: Path, tmp_path: Path, server: Server) -> None:
    checkouts = {}
    for run in ("600-1", "601-1"):
        checkouts[run] = tmp_path / f"run-{run}"
        git(tmp_path, "clone", "--quiet", str(remote), str(checkouts[run]))
    env = {run: script_env(**cli_env(server.port, Path("ledger")), RUN_ID=run) for run in checkouts}
    for run, checkout in checkouts.items():  # both claim before either sends
        mailer = [sys.executable, "-m", "mailer", "dispatch", "--claim", "--run-id", run]
        subprocess.run([*mailer, "--now", DUE], cwd=checkout, env=env[run], check=True, timeout=60)
        pushed = run_script(checkout, "push-ledger.sh", env[run], f"ledger: claim ({run})")
        assert pushed.returncode == 0, pushed.stderr
    for run, checkout in reversed(checkouts.items()):
        subprocess.run(
            [sys.executable, "-m", "mailer", "dispatch", "--yes", "--run-id", run, "--now", DUE],
            cwd=checkout,
            env=env[run],
            timeout=120,
        )
    assert len(server.received) == 13  # the second claimant saw the first claim and held


def test_a_send_larger_than_the_budget_completes_over_several_runs(
    remote: Path, tmp_path: Path
) -> None:
    """At 30 a minute, the job's 180-minute limit ended a send mid-way with the claim
    still taken; MAILER_SEND_BUDGET ends each run cleanly (exit 75, claim released),
    even with a person pushing a line to the same ledger during the first run."""
    runs = 0
    editor = tmp_path / "editor"

    def person_records_a_bounce() -> None:
        git(tmp_path, "clone", "--quiet", str(remote), str(editor))
        with (editor / "ledger" / "2017-03.jsonl").open("a") as handle:
            handle.write(
                '{"time": "2017-03-28T07:30:00.000+00:00", "recipient": "old.contact@example.org",'
                ' "outcome": "bounce", "attempt": 0, "code": null, "reply": "hard: 5.1.1",'
                ' "message_id": "", "segments": [], "run": "<by-hand@isu>"}\n'
            )
        git(editor, "commit", "--quiet", "-am", "a bounce recorded by hand")
        git(editor, "push", "--quiet", "origin", "main")

    with Server(Behaviour(delay=0.25, on_first_data=person_records_a_bounce)) as server:
        while len(server.received) < 13 and runs < 30:  # a loaded machine sends fewer a run
            runs += 1
            checkout = tmp_path / f"run-{700 + runs}"
            git(tmp_path, "clone", "--quiet", str(remote), str(checkout))
            env = script_env(
                **cli_env(server.port, Path("ledger")),
                RUN_ID=f"{700 + runs}-1",
                MAILER_SEND_BUDGET="1s",
                MAILER_MAX_CONNECTIONS="1",
            )
            done = run_script(checkout, "dispatch.sh", env, "--now", DUE)
            assert done.returncode == 0, done.stdout + done.stderr
        counts = server.by_rcpt()
    assert runs > 2 and len(counts) == 13 and set(counts.values()) == {1}
    ledger = remote_ledger(remote, tmp_path)
    assert "by-hand" in ledger and ledger.count('"outcome": "sent"') == 13
    path = tmp_path / "remote-ledger.jsonl"
    path.write_text(ledger)
    assert State.load(path).claims == {}


def test_a_cancelled_run_stops_within_seconds_and_releases_its_claim(
    remote: Path, tmp_path: Path
) -> None:
    """The runner's cancel reached only the shell: mailer went on until killed, with the
    claim taken. dispatch.sh passes it on; mailer stops, releases and exits."""
    with Server(Behaviour(delay=0.4)) as server:
        checkout = tmp_path / "run-800"
        git(tmp_path, "clone", "--quiet", str(remote), str(checkout))
        env = script_env(
            **cli_env(server.port, Path("ledger")), RUN_ID="800-1", MAILER_MAX_CONNECTIONS="1"
        )
        script = subprocess.Popen(
            ["bash", ".github/scripts/dispatch.sh", "--now", DUE],
            cwd=checkout,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(200):
            if len(server.received) >= 2:
                break
            time.sleep(0.05)
        script.send_signal(signal.SIGTERM)
        started = time.monotonic()
        script.wait(timeout=30)
        took = time.monotonic() - started
        assert 0 < len(server.received) < 13
        path = tmp_path / "remote-ledger.jsonl"
        path.write_text(remote_ledger(remote, tmp_path))
        assert State.load(path).claims == {}, script.stderr.read() if script.stderr else ""
        rest = ci_run(remote, tmp_path, server, "801-1")
        assert rest.returncode == 0, rest.stdout + rest.stderr
        counts = server.by_rcpt()
    assert took < 9  # within the runner's 10 s before it kills the tree
    assert len(counts) == 13 and set(counts.values()) == {1}
