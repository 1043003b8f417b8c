-- The line lock of a Vapi call id, held to the end of the transaction by every message that
-- stores listed or provisional lines (src/transcript.rs), so a provisional line and the listed
-- line it is the same utterance as always see each other. By the call id as sent, before any
-- route: the same id in two orgs shares a lock, which only makes them wait. Two-key form,
-- class 0x766f78 ("vox"), apart from an application's one-key advisory locks.
SELECT pg_catalog.pg_advisory_xact_lock(7761784, pg_catalog.hashtext($1))
