"""`pinsyncd check --retrieval`, the restore drill: proof that each service can serve what it
says is `pinned`, without this node.

- `report`: what a result means, the exit code and the output (pure);
- `throwaway`: a Kubo node of its own, in a temporary repo, that knows no peer;
- `run`: one service's drill (its delegates dialled, each CID fetched, the repo verified);
- `command`: the command: the sample, each service in turn, the result kept.
"""
