#!/usr/bin/env bash
# The scheduled run's job summary: the key figures of the issues this run touched
# (sent, failed, unfinished, unsubscribes, complaints; a small Markdown table, far under
# GitHub's 1 MiB a step), and the list's health page for the run's artifact (for the
# staff: counts and domains only; never deployed with the public archive).
# Usage: RUN_ID=<the run's id> GITHUB_STEP_SUMMARY=<file> summary.sh
set -euo pipefail

run=${RUN_ID:?RUN_ID must name this run}
{
  echo "## Dispatch run $run"
  echo
  mailer report --markdown --run "$run" || echo "(the figures could not be read)"
} > summary.md
cat summary.md >> "${GITHUB_STEP_SUMMARY:-/dev/null}"
mailer report --out reports/health.html || echo "::warning::the health report could not be written"
