"""Side by side with the servers a user would pick instead (issue 19): `python -m bench.peers`."""
