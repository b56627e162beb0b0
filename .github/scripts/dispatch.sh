#!/usr/bin/env bash
# The scheduled send, as the workflow runs it (tests run it too, against a local
# bare repository standing in for GitHub):
#   1. claim every due bulletin in its ledger, and push the claim;
#      if that push fails, stop: nothing has been sent;
#   2. send what this run claimed (mailer dispatch --run-id);
#   3. push the outcomes, rebasing on a branch that moved meanwhile.
# A run whose outcomes never reach the repository leaves its claim behind, and
# the next run refuses that bulletin instead of sending it twice.
# Usage: RUN_ID=<unique id> dispatch.sh [extra mailer dispatch options]
set -euo pipefail

run=${RUN_ID:?RUN_ID must name this run}
here=$(dirname "$0")

# Bring back unsubscribe requests, bounces and complaints first (when the endpoint
# or the mailbox is configured). If that
# fails, mailer refuses to send once the last good sync is older than
# MAILER_SYNC_MAX_AGE; the sync state is committed with the ledger.
if [ -n "${MAILER_SERVE_URL:-}" ] || [ -n "${MAILER_IMAP_HOST:-}" ]; then
  mailer sync || echo "::warning::mailer sync failed; sending continues only while the last sync is recent"
fi

# A bulletin with errors (or a stale or blocked one) is reported and skipped; the
# others still go out. The worst status is the script's.
claim_status=0
mailer dispatch --claim --run-id "$run" "$@" || claim_status=$?
if ! bash "$here/push-ledger.sh" "ledger: claim due bulletins (run $run)"; then
  echo "::error::could not record the claim in the repository; nothing was sent" >&2
  exit 1
fi

send_status=0
mailer dispatch --yes --run-id "$run" "$@" || send_status=$?
if [ "$send_status" -eq 75 ]; then
  # Stopped at the relay's quota: the rest is pending, and a later scheduled run
  # resumes it (the ledger's "paused" record makes the fast path come back).
  echo "::notice::stopped at the relay's quota; a later scheduled run continues the send"
  send_status=0
fi

if ! bash "$here/push-ledger.sh" "ledger: outcomes of run $run"; then
  echo "::error::the outcomes of run $run could not be pushed; restore ledger/ from this run's 'ledger' artifact" >&2
  exit 1
fi
if [ "$claim_status" -gt "$send_status" ]; then
  exit "$claim_status"
fi
exit "$send_status"
