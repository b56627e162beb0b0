#!/usr/bin/env bash
# Commit ledger/ and recipients/suppressions.csv (a send suppresses dead
# mailboxes) and push them to the branch this checkout tracks, rebasing when the
# branch moved meanwhile (an editor merged something). Rows a person added to
# suppressions.csv meanwhile are kept beside ours: .gitattributes merges that
# file with git's union driver. Exit 0 when both are on the remote (or
# unchanged), 1 when they could not be pushed.
# Usage: push-ledger.sh "commit message"
set -euo pipefail

message=${1:-"ledger: record dispatch"}
branch=${LEDGER_BRANCH:-$(git rev-parse --abbrev-ref HEAD)}
remote=${LEDGER_REMOTE:-origin}
# Seconds to wait after the first refused push, then twice that, and so on (tests: 0).
backoff=${LEDGER_PUSH_BACKOFF:-1}

# Who commits: the workflow's bot identity unless the environment names one.
export GIT_AUTHOR_NAME=${GIT_AUTHOR_NAME:-mailer dispatch}
export GIT_AUTHOR_EMAIL=${GIT_AUTHOR_EMAIL:-mailer-dispatch@users.noreply.github.com}
export GIT_COMMITTER_NAME=${GIT_COMMITTER_NAME:-$GIT_AUTHOR_NAME}
export GIT_COMMITTER_EMAIL=${GIT_COMMITTER_EMAIL:-$GIT_AUTHOR_EMAIL}

# A union merge keeps both sides' lines; a ledger whose last line is torn (a run
# killed mid-write) would glue the other side's first line onto it. That torn line
# was never acknowledged as written: cut it, so every ledger ends with a newline.
for ledger in ledger/*.jsonl; do
  [ -s "$ledger" ] || continue
  if [ "$(tail -c 1 "$ledger" | od -An -c | tr -d ' ')" != '\n' ]; then
    python3 -c 'import sys; p = sys.argv[1]; d = open(p, "rb").read(); open(p, "wb").write(d[: d.rfind(b"\n") + 1])' "$ledger"
  fi
done

paths=(ledger/)
if [ -e recipients/suppressions.csv ]; then paths+=(recipients/suppressions.csv); fi
git add -- "${paths[@]}"
if git diff --cached --quiet -- "${paths[@]}"; then
  echo "ledger unchanged: nothing to push"
  exit 0
fi
git commit --quiet -m "$message" -- "${paths[@]}"

for attempt in 1 2 3 4 5; do
  if git push --quiet "$remote" "HEAD:refs/heads/$branch"; then
    echo "ledger pushed to $remote/$branch"
    exit 0
  fi
  echo "push refused (attempt $attempt); rebasing on $remote/$branch" >&2
  if ! git pull --quiet --rebase "$remote" "$branch"; then
    git rebase --abort 2>/dev/null || true
    echo "could not rebase the ledger on $remote/$branch" >&2
    exit 1
  fi
  sleep "$((attempt * backoff))"
done
echo "could not push the ledger to $remote/$branch" >&2
exit 1
