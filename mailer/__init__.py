"""mailer: a treaty secretariat's email bulletin pipeline.

Stages, one module each: ``bulletin``/``recipients`` load, ``compose`` renders,
``preview`` (dry run) and, later, ``delivery`` consume the message stream.
"""

__version__ = "0.1.0"
