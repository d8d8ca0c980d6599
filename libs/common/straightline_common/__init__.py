"""What every StraightLine service shares: servers, errors, telemetry, logs, config."""
