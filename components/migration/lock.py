"""The provider process's one stream-write lock."""

import threading

#: Stream writes in one provider process go one at a time: a hand-over reads and then
#: rewrites other streams, and the engine runs up to four resource operations at once.
#: The lifeline takes it before the process exits, so a hand-over in flight finishes.
STREAM_WRITE_LOCK = threading.RLock()
