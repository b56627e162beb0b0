"""`mailer report`: the list's health across issues, agreeing with `mailer status` for
every issue, with counts and domains only (never an address or a token)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailer.cli import app
from mailer.ledger import LedgerDir, Outcome, Record

from .conftest import SAMPLE, SAMPLE_RECIPIENTS, edit, require_tool
from .helpers import LAUNCH_ARGS, axe_violations, cli_env, require_axe
from .smtp_server import Behaviour, Server

# Real servers quote the address, sometimes the person: neither may reach the page.
DEAD = {"research@example.com": "550 5.1.1 <research@example.com>: Jane Doe's mailbox is closed"}


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Two issues sent through a relay refusing one dead mailbox, with returned reports
    (hard, soft, policy), unsubscribes by both channels, a complaint and a quota pause."""
    root = tmp_path_factory.mktemp("history")
    bulletins = root / "bulletins"
    shutil.copytree(SAMPLE, bulletins / "2017-03")
    shutil.copytree(SAMPLE, bulletins / "2017-06")
    edit(bulletins / "2017-06" / "bulletin.yaml", "id: 2017-03", "id: 2017-06")
    recipients = root / "recipients"
    shutil.copytree(SAMPLE_RECIPIENTS, recipients)
    with (recipients / "civil-society.csv").open("a", encoding="utf-8") as handle:
        handle.write("a.reader@yahoo.com,A Reader,,,en\n")  # a feedback-loop provider's user
    env = cli_env(1, root / "ledger")
    with Server(Behaviour(reject_rcpt=DEAD)) as relay:
        env = {**cli_env(relay.port, root / "ledger")}
        for issue in ("2017-03", "2017-06"):
            args = ["send", str(bulletins / issue), "--recipients", str(recipients), "--yes"]
            CliRunner().invoke(app, args, env=env)
    ledgers = LedgerDir(root / "ledger")
    first = next(r.time for r in ledgers.records("2017-06") if r.outcome == Outcome.SENT)
    ledgers.append_beside(
        "2017-06",
        [
            Record.bounce("campaigner@example.org", "soft: mailbox is full", "<r1@x>"),
            Record.bounce("delegation@example.net", "hard: 5.1.1 user unknown", "<r2@x>"),
            Record.bounce("focal.point@example.com", "refused: 5.7.1 blocked", "<r3@x>"),
            Record.bounce("focal.point@example.com", "refused: 5.7.1 blocked", "<r4@x>"),
            Record.bounce("never.sent@example.com", "hard: 5.1.1 unknown", "<r5@x>"),
            Record.for_issue(Outcome.PAUSED, "run-1", reply="quota: resume after …"),
        ],
    )
    day = first[:10]
    with (recipients / "states.csv").open("a", encoding="utf-8") as handle:
        handle.write("newcomer@example.org,New Reader,Mission,Chile,es\n")  # never mailed yet
    with (recipients / "suppressions.csv").open("a", encoding="utf-8") as handle:
        # A one-click request names its issue (sync writes it so); the others, the day.
        handle.write(f"geneva.mission@example.net,one-click unsubscribe (issue 2017-06),{day}\n")
        handle.write(f"seminar.desk@example.net,unsubscribe request by mail,{day}\n")
        handle.write(
            f"seminar.desk@example.net,unsubscribe request by mail,{day}\n"
        )  # merged twice
        handle.write(f"old.contact@example.org,phoned by Jane Doe <jane@gov.example>,{day}\n")
        handle.write(f"survivors@example.com,complaint (abuse),{day}\n")
        handle.write(f"a.reader@yahoo.com,complaint (abuse),{day}\n")
    (root / "ledger" / "2016-12.jsonl").write_text("<<<<<<< HEAD\n")  # a damaged old ledger
    return root, env


def _cli(root: Path, env: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--recipients", str(root / "recipients")], env=env)
    assert result.exit_code in (0, 1), result.output
    return result.output


def test_every_issues_figures_agree_with_mailer_status(
    history: tuple[Path, dict[str, str]],
) -> None:
    root, env = history
    report = json.loads(_cli(root, env, "report", "--json"))
    assert [f["issue"] for f in report["issues"]] == ["2017-06", "2017-03"]  # newest first
    for figures in report["issues"]:
        bulletin = root / "bulletins" / figures["issue"]
        status = json.loads(_cli(root, env, "status", str(bulletin), "--json"))
        assert figures["sent"] == status["total"]["sent"]
        assert figures["failed"] == status["total"]["failed"]
        assert figures["bounces"] == status["bounces"]
        assert figures["unsubscribes"] == status["unsubscribes"]
        assert figures["complaints"] == status["complaints"]
    june = report["issues"][0]
    march = report["issues"][1]
    # research@ was refused as a dead mailbox in March, suppressed, and not mailed in June;
    # in June delegation@ bounced hard, focal.point@ was refused for policy later.
    assert (march["sent"], march["failed"], march["dead"]) == (13, 1, 1)
    assert march["unsubscribes"] == 1  # the one-click request named June: June's alone
    assert (june["sent"], june["failed"], june["dead"], june["policy"], june["soft"]) == (
        13,
        0,
        1,
        1,
        1,
    )
    assert (june["unsubscribes"], june["complaints"], june["pauses"]) == (2, 2, 1)
    # Yahoo's complaints over our mail to Yahoo's users: one of one.
    assert june["provider_sent"] == {"Yahoo and AOL": 1}
    assert june["provider_complaints"] == {"Yahoo and AOL": 1}
    # Each record now keeps the reader's language: the language trend counts every reader.
    assert set(june["languages"]) == {"en", "fr", "es"}
    assert sum(june["languages"].values()) == june["targeted"]
    assert report["totals"]["sent"] == june["sent"] + report["issues"][1]["sent"]
    # seminar.desk@ left once, within 14 days of both issues: the total counts people once.
    assert (june["unsubscribes"], march["unsubscribes"]) == (2, 1)
    assert report["totals"]["unsubscribes"] == 2
    assert report["never_reached"] == 1  # the newcomer (research@ is suppressed, not counted)
    # Each reader counted once per domain over both issues; two reports of one reader's
    # refusal are one refused reader (and never a blocklisting flag).
    domain = next(d for d in report["domains"] if d["domain"] == "example.com")
    assert (domain["readers"], domain["refused"], domain["refusing"]) == (5, 1, False)
    assert domain["reply"] in ("550 5.1.1", "5.7.1")  # codes only: never the reply's words
    assert report["near_soft_limit"] == 0  # one soft bounce, of a limit of 3
    strict = {**env, "MAILER_BOUNCE_SOFT_LIMIT": "2"}
    assert json.loads(_cli(root, strict, "report", "--json"))["near_soft_limit"] == 1


def test_the_report_holds_no_address_and_no_token(history: tuple[Path, dict[str, str]]) -> None:
    root, env = history
    out = root / "reports" / "health.html"
    _cli(root, env, "report", "--out", str(out))
    page = out.read_text(encoding="utf-8")
    figures = _cli(root, env, "report", "--json")
    addresses = {
        line.split(",")[0]
        for csv in (root / "recipients").glob("*.csv")
        for line in csv.read_text(encoding="utf-8").splitlines()[1:]
    }
    assert len(addresses) > 10
    for text in (page, figures):
        assert not [a for a in addresses if a in text]
        assert "token=" not in text and "Jane" not in text  # no reply text, no free reason
    assert "<svg" in page and 'role="img"' in page and "<script" not in page
    # What to look at first: Yahoo's users complained about June (1 of 1), and where the
    # settings a provider checks are reported.
    assert "What to look at" in page and "Yahoo and AOL&#39;s users complained" in page
    assert "mailer check BULLETIN" in page
    assert 'src="http' not in page and 'href="http' not in page  # nothing fetched


@pytest.mark.system  # Chromium with axe-core
def test_the_report_page_passes_axe_and_fits_a_phone(
    history: tuple[Path, dict[str, str]],
) -> None:
    chromium = require_tool("chromium")
    require_axe()
    sync_api = pytest.importorskip("playwright.sync_api")
    root, env = history
    out = root / "reports" / "health.html"
    _cli(root, env, "report", "--out", str(out))
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS)
        for scheme in ("light", "dark"):
            for width in (375, 1280):
                page = browser.new_page(
                    viewport={"width": width, "height": 900}, color_scheme=scheme
                )
                page.goto(out.as_uri())
                assert axe_violations(page) == [], (scheme, width)
                overflow = page.evaluate("document.documentElement.scrollWidth - innerWidth")
                assert overflow <= 0, (scheme, width, overflow)
                page.close()
        browser.close()


def test_addresses_reach_the_terminal_only_and_a_segment_narrows_the_figures(
    history: tuple[Path, dict[str, str]],
) -> None:
    root, env = history
    out = root / "reports" / "narrow.html"
    listed = _cli(root, env, "report", "--out", str(out), "--addresses", "--segment", "states")
    assert "readers of states only" in out.read_text(encoding="utf-8")  # a filtered page says so
    assert "newcomer@example.org" in listed  # staff see whom to clean up…
    assert "newcomer@" not in out.read_text(encoding="utf-8")  # …the page never does
    states = json.loads(_cli(root, env, "report", "--json", "--segment", "states"))
    every = json.loads(_cli(root, env, "report", "--json"))
    june, june_all = states["issues"][0], every["issues"][0]
    assert set(june["segments"]) <= {"states", "international-organizations", "civil-society"}
    assert 0 < june["targeted"] < june_all["targeted"]
    assert june["segments"]["states"] == june_all["segments"]["states"]
    assert june_all["soft"] == 1 and june["soft"] == 0  # campaigner@ is civil society
    unknown = CliRunner().invoke(
        app, ["report", "--segment", "state", "--recipients", str(root / "recipients")], env=env
    )
    assert unknown.exit_code == 2 and "is not a segment" in unknown.output


def test_odd_values_a_ledger_line_may_hold_are_left_out_not_fatal(tmp_path: Path) -> None:
    """A language that is not a word, a recipient that is not an address, a bounce that
    names nobody: the report counts what it can and says nothing of the rest."""
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    sent = (
        '{"time": "2017-03-28T07:00:00.000+00:00", "recipient": %s, "outcome": "sent", '
        '"attempt": 1, "code": 250, "message_id": "<m@x>", "segments": ["states"], '
        '"language": %s}\n'
    )
    (ledger / "2017-03.jsonl").write_text(
        sent % ('"a@example.org"', '"fr"')
        + sent % ('"b@example.org"', "7")
        + sent % ('"c@example.org"', '{"x": 1}')
        + sent % ("null", '"en"')
        + '{"outcome": "bounce", "reply": "hard: 5.1.1"}\n'
    )
    recipients = tmp_path / "recipients"
    recipients.mkdir()
    result = CliRunner().invoke(
        app,
        ["report", "--json", "--recipients", str(recipients)],
        env={"MAILER_LEDGER_DIR": str(ledger)},
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)["issues"][0]
    assert (figures["targeted"], figures["sent"], figures["dead"]) == (3, 3, 0)
    assert figures["languages"] == {"fr": 1}
