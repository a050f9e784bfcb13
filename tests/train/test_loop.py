import threading
import weakref

from finegrain.train.loop import release_in_background


class _Resource:
    """Stands in for an epoch's tf.data iterator, whose teardown can block."""


def test_release_in_background_tears_down_off_the_calling_thread():
    released_on: list[str] = []
    done = threading.Event()
    refs = [_Resource()]
    weakref.finalize(refs[0], lambda: (released_on.append(threading.current_thread().name), done.set()))
    release_in_background(refs)
    assert done.wait(10), "the last reference was never dropped"
    assert released_on == ["finegrain-release"]
    assert refs == []
