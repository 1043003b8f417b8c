-- Experiment: no_check_constraints.sql, no_hot_foreign_keys.sql and no_lead_foreign_key.sql together.
\ir no_check_constraints.sql
\ir no_hot_foreign_keys.sql
\ir no_lead_foreign_key.sql
