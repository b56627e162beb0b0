"""``python -m mailer`` runs the same command line as the ``mailer`` script."""

from mailer.cli import main

main()
