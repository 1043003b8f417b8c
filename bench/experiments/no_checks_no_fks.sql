-- Experiment: no_check_constraints.sql and no_hot_foreign_keys.sql together.
\ir no_check_constraints.sql
\ir no_hot_foreign_keys.sql
