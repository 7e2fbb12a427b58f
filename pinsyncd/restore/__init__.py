"""`pinsyncd restore`: the way back from a backup.

- `choose`: which requests to bring back, each CID once, from the first service that has
  it pinned (pure);
- `listing`: what the services hold;
- `fetch`: one CID into the node (delegates dialled, `pin/add` with a no-progress timeout);
- `display`: progress on a terminal or in the log;
- `run`: the whole restore, its record in the state, and the hand-over to the next sync;
- `summary`: what the user is told, and the exit code.
"""
