"""Per-example jobs at scale: `driver` (shard, pad, resume, write), `identity`
(what names a job; older records migrated), `multihost` (processes agree),
`io` (the one lock, part files, padding), `jobs` (the attack, DDN)."""
