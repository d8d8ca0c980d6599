"""The StraightLine devrunner: model development as jobs that release their resources."""
