"""The StraightLine placer: Algorithm 1 over live heartbeats, behind a thin gRPC servicer."""
