"""The ``ipmn`` console script (top layer, imported by nothing): every command dispatched from one table."""
