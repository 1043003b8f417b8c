-- The floor: one single-row INSERT per transaction, the cost of a durable commit here.
\set r random(1, 9000000000000000000)
INSERT INTO bench.floor (id) VALUES (:r);
