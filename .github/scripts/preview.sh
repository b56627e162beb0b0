#!/usr/bin/env bash
# What the pull-request preview does: `mailer check` and a dry run of every
# bulletin the pull request changes (of every bulletin, when templates or
# recipient lists change), and the web archive with those issues published,
# with a summary in Markdown. Previews (and previews/site/) go to previews/.
# Usage: BASE_SHA=<base commit> preview.sh   (summary to $GITHUB_STEP_SUMMARY, else stdout)
set -euo pipefail

base=${BASE_SHA:?BASE_SHA must name the pull request base commit}
summary=${GITHUB_STEP_SUMMARY:-/dev/stdout}

if git diff --quiet "$base" HEAD -- templates/ mailer/templates/ recipients/; then
  folders=$(git diff --name-only "$base" HEAD -- bulletins/ | cut -d/ -f2 | sort -u \
    | while read -r id; do [ -f "bulletins/$id/bulletin.yaml" ] && echo "bulletins/$id"; done || true)
else
  folders=$(find bulletins -mindepth 2 -maxdepth 2 -name bulletin.yaml -printf '%h\n' | sort)
fi

status=0
{
  echo "## Bulletin preview"
  if [ -z "$folders" ]; then
    echo "No bulletin changed."
  fi
  for folder in $folders; do
    echo "### $folder"
    echo '```'
    if mailer check "$folder" 2>&1 && mailer send "$folder" --dry-run --out previews 2>&1; then
      :
    else
      status=1
    fi
    echo '```'
  done
  if [ -n "$folders" ]; then
    # The web archive as it will look with these issues published (previews/site/).
    includes=()
    for folder in $folders; do includes+=(--include "$(basename "$folder")"); done
    echo "### web archive"
    echo '```'
    mailer publish --out previews/site "${includes[@]}" 2>&1 || status=1
    echo '```'
  fi
} >> "$summary"
exit "$status"
