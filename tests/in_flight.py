"""How many threads are inside a block at once: `with counter:` around the work, then
`counter.most` is the most there were together."""

import threading


class InFlight:
    def __init__(self):
        self._lock = threading.Lock()
        self.now = self.most = 0

    def __enter__(self):
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def __exit__(self, *_exc):
        with self._lock:
            self.now -= 1
