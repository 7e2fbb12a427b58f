"""The sync layer: carries out what the core decides, for the node (`engine`) and for each
service (`service`, with its parts). I/O only: the rules are in `planner`, `policy` and
`outcomes`."""
