-- Candidate (issue 14): an index on the ends of listed lines, so that a provisional line's check
-- (sql/queries/line_sent.sql: is a listed line of the same words spoken over this moment?)
-- reads only the call's lines that ended in the 10 s before it, not every line of the call.
-- Every listed line then pays one more index entry.
CREATE INDEX call_transcripts_listed_end_idx
    ON voxanne.call_transcripts (org_id, call_id, ended_at) WHERE ended_at IS NOT NULL;
