"""mailer: a treaty secretariat's email bulletin pipeline.

Stages, one module each: ``bulletin``/``recipients`` load, ``compose`` renders,
``preview`` (dry run) and ``delivery`` consume the message stream, ``ledger``
records it; ``publish`` builds the web archive, ``serve`` and ``sync`` (with
``inbound``, ``bounces`` and ``inbox``) bring back what readers and mail servers
say. ``cli`` is the command line around them.
"""

__version__ = "0.1.0"
