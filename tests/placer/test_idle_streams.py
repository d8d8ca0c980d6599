from straightline_placer.idle import IdleStreams


class Stream:
    cancelled = False

    def cancel(self):
        self.cancelled = True


def test_a_stream_quiet_for_longer_than_the_timeout_is_cancelled_once():
    now = [0.0]
    streams = IdleStreams(clock=lambda: now[0])
    quiet, talking, ended = Stream(), Stream(), Stream()
    for stream in (quiet, talking, ended):
        streams.touch(stream)
    streams.forget(ended)
    now[0] = 2.0
    streams.touch(talking)
    now[0] = 3.5
    assert streams.close_idle(timeout_s=3.0) == 1
    assert (quiet.cancelled, talking.cancelled, ended.cancelled) == (True, False, False)
    assert streams.close_idle(timeout_s=3.0) == 0
