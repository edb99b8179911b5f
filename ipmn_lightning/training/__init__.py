"""Training: the LightningCLI behind ``ipmn fit|validate|test|predict``; ``build_cli(args)`` for the pipeline."""
