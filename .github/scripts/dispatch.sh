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

# The runner's cancel (SIGINT, SIGTERM 7.5 s later, the process tree killed 2.5 s
# after that) reaches this shell only: pass it on, so mailer starts nothing new,
# gives messages in flight 5 s, releases its claim and exits; the outcomes are then
# pushed below (and by the workflow's always() step if this shell is killed first).
send_status=0
mailer dispatch --yes --run-id "$run" "$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null || true' INT TERM
while kill -0 "$child" 2>/dev/null; do
  wait "$child" && send_status=0 || send_status=$?
done
wait "$child" 2>/dev/null && send_status=0 || send_status=$?
trap - INT TERM
if [ "$send_status" -eq 75 ]; then
  # Stopped at the relay's quota or at MAILER_SEND_BUDGET: the rest is pending, and a
  # later scheduled run resumes it (the ledger's "paused" record brings the fast path back).
  echo "::notice::stopped at a quota or the send budget; a later scheduled run continues the send"
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
