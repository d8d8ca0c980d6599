"""A discrete-event simulator of StraightLine at a scale no single machine reaches. It drives
the placer's real code (its core, rules, predictions, registry and frequency window, on a
virtual clock) and the adapters' real statistics, with calibrated platforms instead of
models. README.md says what it models and what it leaves out."""
