"""StraightLine inference adapters: the v1 InferenceService in front of each platform."""
