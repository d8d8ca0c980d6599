"""The bounds of adaptive batching settings, wherever they are set: a model's serving settings
and the model server's flags (`straightline_inference.batching`), and the placer's policy,
whose per-platform ceilings reach the model servers with every request."""

MAX_BATCH_SIZE = 256
MAX_QUEUE_DELAY_S = 1.0
