"""The inference adapter: one program, `--platform flask|docker|serverless`."""
