#!/usr/bin/env bash
# Recipients, ledgers and previews hold personal data (names, addresses, who
# bounced or unsubscribed). Refuse to run in a repository the public can read.
# `github.event.repository` is empty on scheduled runs, so ask the API.
# Usage: GH_TOKEN=<token> GITHUB_REPOSITORY=owner/name require-private.sh
set -euo pipefail

repository=${GITHUB_REPOSITORY:?GITHUB_REPOSITORY must name the repository}
if ! visibility=$(gh api "repos/$repository" --jq .visibility); then
  echo "::error::could not ask GitHub for the visibility of $repository; refusing to run" >&2
  exit 1
fi
case "$visibility" in
  private | internal)
    echo "repository $repository is $visibility: personal data stays inside it"
    ;;
  *)
    echo "::error::repository $repository is '$visibility'. Its recipient lists, ledgers and previews hold personal data; make the repository private (Settings › General › Danger Zone › Change visibility) before mailer runs here." >&2
    exit 1
    ;;
esac
