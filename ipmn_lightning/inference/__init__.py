"""Deployment without Lightning: the safetensors bundles, the ``IPMN`` API and the sender/receiver/verifier commands."""
