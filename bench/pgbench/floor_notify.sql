-- The floor plus one pg_notify in the same transaction: what a NOTIFY costs a commit. (Every
-- notifying transaction takes a cluster-wide lock in PreCommit_Notify and holds it through its
-- WAL flush, so notifying commits cannot be grouped.)
\set r random(1, 9000000000000000000)
INSERT INTO bench.floor (id) SELECT :r WHERE pg_notify('voxanne_bench', :r::text) IS NOT NULL;
