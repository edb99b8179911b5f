"""The owner's audit of a suspect model (inference layer): :mod:`~ipmn_lightning.audit.query` asks a live suspect."""
